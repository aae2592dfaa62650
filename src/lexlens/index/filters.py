"""``--where`` filters on item metadata: ``field=value AND field>3``.

Conditions are ``FIELD OP VALUE`` with ``OP`` one of ``=``, ``!=``, ``>``, ``<``, ``>=``,
``<=``, joined by ``AND`` (or ``&&`` or commas). ``FIELD`` is a user field from the
dataset records (dotted paths reach into nested objects: ``scene.kind=two``) or one of
the item columns ``id``, ``path``, ``text``, ``size``, ``mtime``. ``VALUE`` is a number,
``true``/``false``, or a string (quote it with ``'`` or ``"`` to keep spaces or operator
characters). ``>``/``<`` compare numbers; ``=``/``!=`` compare numbers with numbers and
strings with strings. An item without the field matches only ``!=``.

The item columns come first: a user field with a column's name (a dataset's own ``size`` or
``id`` key) is kept with the item but no condition reaches it (``lexlens search`` notes it:
:meth:`lexlens.index.index.Index.shadowed_fields`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lexlens.errors import UsageError

__all__ = ["Condition", "parse_where", "where_sql", "COLUMNS", "COLUMN_MEANINGS"]

#: what each item column holds (a condition on the name tests the column)
COLUMN_MEANINGS = {
    "id": "the item's id",
    "path": "the image file's absolute path",
    "text": "the caption of a caption index",
    "size": "the image file's size in bytes",
    "mtime": "the image file's modification time, in seconds",
}
#: the item columns a condition can name besides the user fields
COLUMNS = frozenset(COLUMN_MEANINGS)
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_COND = re.compile(
    r"\s*(?P<field>[^\s=!<>]+)\s*(?P<op>!=|>=|<=|=|>|<)\s*"
    r"(?P<value>'[^']*'|\"[^\"]*\"|[^\s,'\"&]+)\s*"
)
_SEP = re.compile(r"\s*(?:,|&&|\band\b)\s*", re.IGNORECASE)
_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class Condition:
    """One ``field op value`` test."""

    field: str
    op: str
    value: Any


def _value(tok: str) -> Any:
    if tok[:1] in "'\"":
        return tok[1:-1]
    if _NUM.fullmatch(tok):
        f = float(tok)
        return int(f) if f.is_integer() and re.fullmatch(r"[-+]?\d+", tok) else f
    low = tok.lower()
    if low in ("true", "false"):
        return low == "true"
    return tok


def parse_where(expr: str | None) -> list[Condition]:
    """Parse a filter expression; raises :class:`UsageError` naming what is wrong."""
    if expr is None or not expr.strip():
        return []
    conds: list[Condition] = []
    pos, text = 0, expr.strip()
    while pos < len(text):
        m = _COND.match(text, pos)
        if not m:
            raise UsageError(
                f"bad filter {expr!r} near {text[pos:][:20]!r}: expected FIELD=VALUE, FIELD!=VALUE, "
                "FIELD>NUMBER or FIELD<NUMBER joined by AND"
            )
        field = m.group("field")
        if not _FIELD.fullmatch(field):
            raise UsageError(f"bad field name {field!r} in filter {expr!r}")
        value = _value(m.group("value"))
        op = m.group("op")
        if op in (">", "<", ">=", "<=") and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise UsageError(f"{field}{op}{m.group('value')}: {op} needs a number")
        conds.append(Condition(field, op, value))
        pos = m.end()
        if pos < len(text):
            sep = _SEP.match(text, pos)
            if not sep or sep.end() == pos:
                raise UsageError(
                    f"bad filter {expr!r}: expected AND between conditions near {text[pos:][:20]!r}"
                )
            pos = sep.end()
    return conds


def where_sql(conds: list[Condition]) -> tuple[str, list[Any]]:
    """A SQL condition over the ``items`` table (user fields live in the ``fields`` JSON)."""
    parts: list[str] = []
    params: list[Any] = []
    for c in conds:
        if c.field in COLUMNS:  # a fixed identifier from the whitelist
            expr, type_expr, path_params = c.field, f"typeof({c.field})", []
            types = {"num": ("integer", "real"), "text": ("text",), "bool": ("integer",)}
        else:
            expr, type_expr, path_params = (
                "json_extract(fields, ?)",
                "json_type(fields, ?)",
                ["$." + c.field],
            )
            types = {"num": ("integer", "real"), "text": ("text",), "bool": ("true", "false")}
        if isinstance(c.value, bool):
            want, value = types["bool"], int(c.value)
        elif isinstance(c.value, int | float):
            want, value = types["num"], c.value
        else:
            want, value = types["text"], c.value
        test = f"{type_expr} IN ({', '.join(repr(t) for t in want)}) AND {expr} {'=' if c.op == '!=' else c.op} ?"
        parts.append(f"NOT COALESCE(({test}), 0)" if c.op == "!=" else f"COALESCE(({test}), 0)")
        params += path_params + path_params + [value]
    return (" AND ".join(parts) or "1"), params
