"""The overall progress of a run: one bar over its cells with an ETA, or one ``[i/N] <cell id>`` line per cell.

The bar (tqdm, on stderr, first line) counts the cells as they finish, estimates the time left from their pace and
names the cell running. The bars of a cell's trainings and evaluations (Ignite's, from
:func:`common.handlers.attach_progress`) open below it, as tqdm puts a new bar on the first free line, and vanish
when done. While the bar is shown, the run's messages and Python warnings are written above it instead of through
it. Without a bar (``--no-progress``, a rank other than 0), each cell starts with its ``[i/N]`` line, which suits
logs.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from tqdm import tqdm

Log = Callable[[str], None]


class CellProgress:
    """Progress over the ``total`` cells of one experiment: a tqdm bar titled ``desc`` if ``bar``, else lines.

    Use it as a context manager: leaving it closes the bar (which stays on screen) and gives warnings back.

    Args:
        desc: the bar's title, ``<paper>/<experiment>``; the cell ids it shows are cut after it.
        total: the cells to run.
        bar: show the bar (no bar for nothing to run).
        log: where lines go (``[i/N]`` lines without a bar, messages above the bar with one).
    """

    def __init__(self, desc: str, total: int, *, bar: bool, log: Log) -> None:
        self.desc, self.total, self.started, self._log = desc, total, 0, log
        self.bar = tqdm(total=total, desc=desc, unit="cell", position=0, leave=True) if bar and total else None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> CellProgress:
        if self.bar is not None:
            self._stack.enter_context(_warnings_above_bars())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._stack.close()
        if self.bar is not None:
            self.bar.close()

    def start(self, cell_id: str) -> None:
        """Cell ``cell_id`` starts: its line, or its id (after ``desc``) beside the bar."""
        self.started += 1
        if self.bar is None:
            self._log(f"[{self.started}/{self.total}] {cell_id}")
        else:
            self.bar.set_postfix_str(cell_id.removeprefix(f"{self.desc}/"))

    def finish(self) -> None:
        """The cell started last has finished: the bar moves on."""
        if self.bar is not None:
            self.bar.update(1)

    def say(self, line: str) -> None:
        """Log ``line``; above the bar when there is one."""
        if self.bar is None:
            self._log(line)
            return
        with tqdm.external_write_mode():
            self._log(line)


@contextlib.contextmanager
def _warnings_above_bars() -> Iterator[None]:
    """Show Python warnings above the tqdm bars (cleared while the warning is written, then drawn again)."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def above(*arguments: Any, **keywords: Any) -> None:
            with tqdm.external_write_mode():
                show(*arguments, **keywords)

        warnings.showwarning = above
        yield
