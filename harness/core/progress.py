"""A progress display for a loop of known length: a rich bar on a terminal, one line per event in a log
(the start, then at most every 30 s, and the end), so a long pass is never silent."""

from __future__ import annotations

import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
LINE_EVERY_S = 30.0


def track(items: Iterable[T], total: int, label: str, console, unit: str = "batches") -> Iterator[T]:
    """Yield `items`, showing how many of `total` are done, the elapsed time and the time left."""
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn(),
                      TextColumn("left"), TimeRemainingColumn(), console=console, transient=True) as p:
            task = p.add_task(label, total=total)
            for item in items:
                yield item
                p.advance(task)
        return
    t0 = last = time.time()
    console.print(f"{label}: 0/{total} {unit}", markup=False, highlight=False, soft_wrap=True)
    done = 0
    for item in items:
        yield item
        done += 1
        now = time.time()
        if done == total or now - last >= LINE_EVERY_S:
            last = now
            left = (now - t0) / done * (total - done)
            console.print(f"{label}: {done}/{total} {unit}, {now - t0:.0f} s elapsed, {left:.0f} s left",
                          markup=False, highlight=False, soft_wrap=True)
