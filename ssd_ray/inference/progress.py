"""Driver-side progress of a long prediction run: images done / total, rate and ETA, every few seconds.

The rate counts from the first finished batch, so start-up (Ray, actors, model loading) is reported
apart (`first_result_s`) instead of dragging the rate and inflating the ETA.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("ssd_ray.predict")


def format_duration(seconds: float) -> str:
    """`75` -> "1 min 15 s", `3700` -> "1 h 01 min"; "?" for an unknown (inf/NaN) duration."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """`update(n)` after each batch; logs `line()` at most every `every_s` seconds and at `finish()`."""

    def __init__(self, total: int, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log):
        self.total = int(total)
        self.every_s = float(every_s)
        self.clock = clock
        self.log = logger
        self.start = clock()
        self.done = 0
        self.first_at: float | None = None  # clock when the first batch finished
        self.first_done = 0  # images in that batch (not part of the steady rate)
        self._last_log = self.start

    @property
    def first_result_s(self) -> float | None:
        """Seconds from the start to the first finished batch (start-up + one batch)."""
        return None if self.first_at is None else self.first_at - self.start

    def rate(self) -> float:
        """Images/s since the first finished batch (nan until a second one arrives)."""
        if self.first_at is None:
            return float("nan")
        dt = self.clock() - self.first_at
        return (self.done - self.first_done) / dt if dt > 0 and self.done > self.first_done else float("nan")

    def line(self) -> str:
        rate = self.rate()
        if rate != rate and self.done:  # one batch so far: the overall rate is all there is
            elapsed = self.clock() - self.start
            rate = self.done / elapsed if elapsed > 0 else float("nan")
        left = self.total - self.done
        eta = left / rate if rate == rate and rate > 0 else (0.0 if left == 0 else float("nan"))
        pct = 100.0 * self.done / self.total if self.total else 100.0
        rate_s = f"{rate:.1f} images/s" if rate == rate else "rate ?"
        return f"{self.done}/{self.total} images ({pct:.1f} %), {rate_s}, ETA {format_duration(eta)}"

    def update(self, n: int) -> None:
        now = self.clock()
        self.done += int(n)
        if self.first_at is None:
            self.first_at, self.first_done = now, self.done
        if now - self._last_log >= self.every_s:
            self._last_log = now
            self.log.info("%s", self.line())

    def finish(self) -> None:
        self.log.info("%s", self.line())
