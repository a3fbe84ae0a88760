"""Shared by the benchmarks: interleaved timing, and tables with ratios to a baseline
measured in the same run (never against numbers from another machine or day)."""

from __future__ import annotations

import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# `python benchmarks/NAME.py` from a checkout works without installing the package.
_SRC = Path(__file__).resolve().parents[1] / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))


@dataclass
class Samples:
    """Per call: wall time, and the process's CPU time (all threads). With scripted models
    a turn is pure CPU, and CPU time is far less disturbed by other processes on a busy
    machine than wall time; with model latency (latency.py) only wall time means much."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def interleaved(
    variants: Mapping[str, Callable[[], Any]],
    runs: int,
    *,
    after_each: Callable[[], Any] | None = None,
    seed: int = 0,
) -> dict[str, Samples]:
    """Wall and CPU times of ``runs`` calls of each variant, in a fresh random order each round, so
    machine noise and garbage collection hit every variant alike. One untimed warm-up.

    ``after_each`` runs, untimed, after every call (e.g. flushing background work, so it
    does not spill into the next variant's timed call)."""
    for run in variants.values():
        run()
        if after_each is not None:
            after_each()
    timings = {name: Samples() for name in variants}
    order = list(variants)
    shuffle = random.Random(seed).shuffle
    for _ in range(runs):
        shuffle(order)
        for name in order:
            started, cpu_started = time.perf_counter(), time.process_time()
            variants[name]()
            timings[name].wall.append(time.perf_counter() - started)
            timings[name].cpu.append(time.process_time() - cpu_started)
            if after_each is not None:
                after_each()
    return timings


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str) -> None:
    """Print an aligned plain-text table (copy-pastes into notes and issues)."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    print(title)
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print()


def verdict(value: float, target: float | None) -> str:
    if target is None:
        return "-"
    return f"<= {target:g}: " + ("met" if value <= target else "MISSED")


def rss_mb() -> float:
    """Resident set size now, in MB (Linux ``/proc``; the peak on other systems)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return peak_rss_mb()
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak / 1e3  # bytes vs KiB


def machine() -> str:
    return f"Python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), load " + " ".join(
        f"{x:.1f}" for x in os.getloadavg()
    )
