"""Intervals as the report writes and compares them: `mean [low, high]` and a verdict."""

from __future__ import annotations

import numpy as np

VERDICT = {
    "is better than": "better",
    "is worse than": "worse",
    "is within the 95% CI of": "within the CI",
    "cannot be told apart (fewer than two seeds)": "one seed only",
}


def interval(row, name: str) -> tuple[float, float, float]:
    """A table row's `name` and its 95% CI bounds (the columns `design.runs_interval` made)."""
    return getattr(row, name), getattr(row, f"{name}_ci_low"), getattr(row, f"{name}_ci_high")


def compare(measured: tuple[float, float, float], base: tuple[float, float, float]) -> str:
    """How an interval stands against a baseline's: above, below, or overlapping it."""
    (_, low, high), (_, base_low, base_high) = measured, base
    if np.isnan([low, high, base_low, base_high]).any():
        return "cannot be told apart (fewer than two seeds)"
    if low > base_high:
        return "is better than"
    if high < base_low:
        return "is worse than"
    return "is within the 95% CI of"


def interval_text(mean: float, low: float, high: float) -> str:
    """`0.791 [0.695, 0.887]`; the mean alone when the interval is undefined (one seed)."""
    if np.isnan([low, high]).any():
        return f"{mean:.3f}"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def generator_seeds(row) -> int:
    """How many generator seeds a table row's accuracy interval covers (1: none to cover)."""
    return int(getattr(row, "accuracy_generator_seeds", 1))


def covers(row) -> str:
    """` (95% CI over 3 generator seeds)` where a row's interval includes the generator."""
    generators = generator_seeds(row)
    return f" (95% CI over {generators} generator seeds)" if generators > 1 else ""


def seeds_text(row) -> str:
    """`3 x 3` (generator x classifier seeds) for a row with generated images, else `3`."""
    generators, seeds = generator_seeds(row), int(row.seeds)
    return f"{generators} x {seeds // generators}" if generators > 1 else f"{seeds}"
