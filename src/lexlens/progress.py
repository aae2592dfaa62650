"""Progress bars for long work (tqdm on stderr; silent when disabled or not a terminal)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["progress_bar"]


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextlib.contextmanager
def progress_bar(
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    initial: int = 0,
) -> Iterator[Any]:
    """A tqdm bar when ``enabled`` and stderr is a terminal; otherwise a no-op object.

    ``initial``: work already done (a resumed run starts the bar there).
    """
    if not enabled or not sys.stderr.isatty():
        yield _NullBar()
        return
    from tqdm.auto import tqdm

    with tqdm(
        total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False, initial=initial
    ) as bar:
        yield bar
