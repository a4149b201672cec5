"""Small timing helpers shared by the bench scripts: alternating rounds, medians, a plain-text table.

Variants are timed in alternating order within the same process (A B, B A, A B, ...) so that drift
of a shared machine (other jobs, thermal, caches) hits every variant alike; the median over rounds
is reported because a single slow round (a neighbour's burst) should not move the result.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable


def alternating_rounds(variants: dict[str, Callable[[int], int]], rounds: int,
                       warmup: int = 1) -> dict[str, list[float]]:
    """Time each variant `rounds` times, alternating the order every round.

    `variants[name](round_index)` does one round of work and returns how many items it processed;
    round_index runs from -warmup to rounds-1 (negative while warming up).
    Returns `{name: [items per second of each timed round]}`; `warmup` untimed rounds run first.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(variants)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(-warmup, rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            t0 = time.perf_counter()
            items = variants[name](r)
            dt = time.perf_counter() - t0
            if r >= 0:
                rates[name].append(items / dt)
    return rates


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def format_table(headers: list[str], rows: list[list[object]]) -> str:
    """Left-aligned first column, right-aligned others; floats printed with 1 decimal."""
    cells = [[f"{c:.1f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(vals: list[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths)))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(row) for row in cells)])
