"""The ``lexlens`` command line: one :func:`main` with subcommands.

Arguments are parsed only here, into one dataclass per command, and handed to the
library (``lexlens.data``, ``lexlens.index``, ``lexlens.search``, ``lexlens.eval``, ...).
Errors reach the user as one line on stderr; ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

from lexlens.errors import LexlensError

__all__ = ["main", "build_parser"]


# ----------------------------------------------------------------------------- helpers
def _emit(result: Any, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    """Print ``result`` as JSON (``--json``) or as human text."""
    if as_json:
        payload = asdict(result) if is_dataclass(result) else result
        print(json.dumps(payload, indent=2, default=_json_default))
    elif text is not None:
        print(text(result))
    else:
        print(result)


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


class _NotYet(LexlensError):
    pass


def _not_yet(what: str, issue: int) -> Callable[[Any], int]:
    def run(_: Any) -> int:
        raise _NotYet(f"`lexlens {what}` is not implemented yet (tracked in issue #{issue})")

    return run


# ----------------------------------------------------------------------------- models
@dataclass
class ModelsArgs:
    json: bool = False


def _build_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(_make=lambda ns: ModelsArgs(json=ns.json), _run=_run_models)


def _run_models(a: ModelsArgs) -> int:
    from lexlens.models.registry import BACKENDS, list_models

    models = list_models()

    def text(m: dict[str, list[str]]) -> str:
        lines = []
        for key, names in m.items():
            lines.append(f"{key}:  ({BACKENDS[key].description})")
            lines.extend(f"  {key}:{n}" for n in names)
            if not names:
                lines.append("  (no names known offline; pass a local path)")
        return "\n".join(lines)

    _emit(models, a.json, text)
    return 0


# ----------------------------------------------------------------------------- data  (issue #2)
def _build_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="generate or inspect datasets")
    p.set_defaults(_make=lambda ns: ns, _run=_not_yet("data", 2))


# ----------------------------------------------------------------------------- train (issue #4)
def _build_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or fine-tune a dual encoder")
    p.set_defaults(_make=lambda ns: ns, _run=_not_yet("train", 4))


# ----------------------------------------------------------------------------- index (issue #5)
def _build_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build, update and inspect indexes")
    p.set_defaults(_make=lambda ns: ns, _run=_not_yet("index", 5))


# ----------------------------------------------------------------------------- search (issue #5)
def _build_search(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="query an index by text, image, image+text or embedding")
    p.set_defaults(_make=lambda ns: ns, _run=_not_yet("search", 5))


# ----------------------------------------------------------------------------- eval (issue #3)
def _build_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="Recall@K both ways, rSum, fine-grained accuracy")
    p.set_defaults(_make=lambda ns: ns, _run=_not_yet("eval", 3))


# ----------------------------------------------------------------------------- bench (issues #2, #3)
def _build_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed and memory benchmarks")
    p.set_defaults(_make=lambda ns: ns, _run=_not_yet("bench", 3))


# ----------------------------------------------------------------------------- serve (issue #7)
def _build_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP API and web page")
    p.set_defaults(_make=lambda ns: ns, _run=_not_yet("serve", 7))


# ----------------------------------------------------------------------------- demo (issue #4)
def _build_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build the scenes demo collection and search it")
    p.set_defaults(_make=lambda ns: ns, _run=_not_yet("demo", 4))


# ----------------------------------------------------------------------------- parser
_BUILDERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _build_data,
    _build_train,
    _build_index,
    _build_search,
    _build_eval,
    _build_bench,
    _build_serve,
    _build_models,
    _build_demo,
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (one subparser per command)."""
    parser = argparse.ArgumentParser(
        prog="lexlens",
        description="Image-text retrieval: dense, lexical and hybrid search.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for build in _BUILDERS:
        build(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    ns = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not getattr(ns, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(ns._run(ns._make(ns)) or 0)
    except LexlensError as e:
        print(f"lexlens: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("lexlens: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
