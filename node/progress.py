"""Progress bars for long CLI operations (meter import, issuance).

:func:`progress_bar` yields a ``(done, total)`` callback.  On a terminal it drives a rich bar
(transient: it disappears when the operation ends, leaving only the result); when stdout is
not a terminal, or the caller prints JSON, the callback does nothing, so logs and pipes see
only the result.  Descriptions are shown literally (never parsed as rich markup).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

#: The callback an operation calls with (units done, units in total; 0 = unknown).
Callback = Callable[[int, int], None]


def wanted(as_json: bool = False) -> bool:
    """A bar is shown only on a terminal and never with ``--json``."""
    return not as_json and sys.stdout.isatty()


def _nothing(done: int, total: int) -> None:
    return None


@contextmanager
def progress_bar(description: str, unit: str, *, enabled: bool) -> Iterator[Callback]:
    """A callback updating a bar named ``description`` counting ``unit`` (e.g. "readings")."""
    if not enabled:
        yield _nothing
        return
    bar = Progress(
        TextColumn("{task.fields[label]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(),
        transient=True,
    )
    task = bar.add_task("", total=None, label=Text(description))

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total or None)

    with bar:
        yield update
