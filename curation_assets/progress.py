"""Progress lines for long stages: done/total, rate and time left, at most one line per interval.

A stage over millions of rows runs for minutes; the run's log (and the UI's log view) should say
how far it is and when it will end, without a line per batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """`update(n)` after each piece of work; logs when `interval_s` has passed since the last line
    (and always at the end). `clock` is injectable so the rate arithmetic can be tested exactly."""

    def __init__(self, total: int, label: str, log: Callable[[str], None], unit: str = "rows",
                 interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        if total < 0:
            raise ValueError(f"total: must be >= 0, got {total}")
        self.total, self.label, self.log, self.unit = int(total), label, log, unit
        self.interval_s, self.clock = float(interval_s), clock
        self.done = 0
        self.start = self.last = clock()
        self.lines: list[str] = []

    def line(self) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        rate = self.done / elapsed
        share = self.done / self.total if self.total else 1.0
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = _duration(left) if left != float("inf") else "unknown"
        return (f"{self.label}: {self.done:,}/{self.total:,} {self.unit} ({share:.0%}), "
                f"{rate:,.1f} {self.unit}/s, {_duration(elapsed)} elapsed, ~{eta} left")

    def update(self, n: int) -> None:
        self.done = min(self.total, self.done + int(n))
        now = self.clock()
        if self.done >= self.total or now - self.last >= self.interval_s:
            self.last = now
            text = self.line()
            self.lines.append(text)
            self.log(text)
