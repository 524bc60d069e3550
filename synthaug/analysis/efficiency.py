"""What a synthetic set is worth in real images: the sample-efficiency sweep.

For each count of real images per class (`study.sample_efficiency.real_per_class`), the
classifier trained on those real images alone, and on the same real images plus
`generated_per_class` synthetic images per class from each arm (added, not replacing).
Each arm's accuracy is read off the real-only curve: the number of real images per class
that reach the same accuracy (interpolated linearly in log count between the measured
points), and so how many real images per class the synthetic set stands in for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthaug.config import StudyConfig
from synthaug.design import by_pair, runs_interval

REAL_ONLY = "real only"


def sample_efficiency(cfg: StudyConfig, cells: list[dict], n_classes: int) -> pd.DataFrame:
    """Long format: a row per (real images per class, series), series `real only` or an
    arm; accuracy with its 95% CI over seeds; for the arms, the real-only equivalent."""
    sweep = cfg.study.sample_efficiency
    if sweep is None:
        return pd.DataFrame()
    added = sweep.generated_per_class * n_classes
    rows = []
    for series in [REAL_ONLY, *cfg.generation.arms]:
        groups = by_pair(cells, "lora" if series == REAL_ONLY else series)
        for per_class in sweep.real_per_class:
            n_generated = 0 if series == REAL_ONLY else added
            runs = groups.get((n_generated, per_class * n_classes), [])
            if runs:
                rows.append(
                    {
                        "series": series,
                        "real_per_class": per_class,
                        "generated_per_class": n_generated // n_classes,
                        "seeds": len(runs),
                        **runs_interval(runs, "accuracy"),
                    }
                )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    real = table[table["series"] == REAL_ONLY]
    curve = (real["real_per_class"].to_numpy(), real["accuracy"].to_numpy())
    table["real_equivalent_per_class"] = [
        real_equivalent(*curve, accuracy) if series != REAL_ONLY else np.nan
        for series, accuracy in zip(table["series"], table["accuracy"], strict=True)
    ]
    table["worth_real_per_class"] = table["real_equivalent_per_class"] - table["real_per_class"]
    return table


def real_equivalent(counts: np.ndarray, accuracies: np.ndarray, accuracy: float) -> float:
    """Real images per class at which the real-only curve reaches `accuracy`: linear in
    log count between measured points, the curve made non-decreasing first (more real
    images never count as worse); -inf below the first point, +inf above the last (the
    sweep cannot say), NaN with fewer than two points."""
    if len(counts) < 2:
        return float("nan")
    order = np.argsort(counts)
    logs = np.log(counts[order].astype(float))
    curve = np.maximum.accumulate(accuracies[order])
    if accuracy < curve[0]:
        return float("-inf")
    if accuracy > curve[-1]:
        return float("inf")
    # the first point where the curve reaches `accuracy`, interpolated from the one before
    reach = int(np.argmax(curve >= accuracy))
    if reach == 0 or curve[reach] == curve[reach - 1]:
        return float(np.exp(logs[reach]))
    share = (accuracy - curve[reach - 1]) / (curve[reach] - curve[reach - 1])
    return float(np.exp(logs[reach - 1] + share * (logs[reach] - logs[reach - 1])))


def efficiency_text(table: pd.DataFrame) -> list[str]:
    """One line per arm: what its synthetic images are worth at each real count."""
    if table.empty:
        return []
    lines = []
    for series, rows in table[table["series"] != REAL_ONLY].groupby("series", sort=False):
        added = int(rows["generated_per_class"].iloc[0])
        parts = []
        for row in rows.itertuples():
            equivalent = row.real_equivalent_per_class
            if np.isnan(equivalent):
                parts.append(f"{row.real_per_class}: no real-only curve")
            elif np.isinf(equivalent):
                side = "below the smallest" if equivalent < 0 else "above the largest"
                parts.append(f"{row.real_per_class}: {side} real-only point")
            else:
                worth = row.worth_real_per_class
                parts.append(f"{row.real_per_class} → {equivalent:.1f} ({worth:+.1f})")
        lines.append(
            f"{series}: {added} synthetic images per class are worth, as real images per "
            "class (real per class → real-only equivalent, difference): " + "; ".join(parts)
        )
    return lines
