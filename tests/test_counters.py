"""benchmarks/counters.py: the instruction count of the same work repeats (the claim the overhead
benchmark's instruction ratios rest on), and grows with the work."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from counters import open_counters  # noqa: E402


def _work(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def test_instructions_repeat_and_scale() -> None:
    counters = open_counters()
    if counters is None:
        pytest.skip("this system gives no CPU counters (perf_event_open refused)")
    _work(100_000)  # warm up

    def instructions(n: int) -> int:
        before = counters.read()
        _work(n)
        return (counters.read() - before).instructions

    small = sorted(instructions(100_000) for _ in range(5))
    large = statistics.median(instructions(1_000_000) for _ in range(3))
    assert (small[3] - small[1]) / small[2] < 0.02  # the middle three agree
    assert 8 * small[2] < large < 12 * small[2]
