"""What the paper's undefined "mse" can be: each reading on this study's predictions, and
which readings can reach the paper's Table 2 values at its accuracies."""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthaug.analysis.tables import paper_results
from synthaug.config import StudyConfig
from synthaug.design import by_pair
from synthaug.metrics import reading_bounds

READINGS = ("index_mse", "index_rmse", "onehot_mse", "brier", "cross_entropy")


def random_gap(n_classes: int) -> float:
    """Mean squared class-index gap of a mistake that lands on any other class at random."""
    return n_classes * (n_classes + 1) / 6


def mse_readings(cfg: StudyConfig, cells: list[dict]) -> pd.DataFrame:
    """Per mix of this study: accuracy and every reading of the paper's "mse" (mean over
    seeds), with the mean squared index gap per mistake beside a random mistake's."""
    groups = by_pair(cells)
    rows = []
    for mix in cfg.study.resolved_mixes():
        runs = [m for m in groups.get((mix.n_generated, mix.n_real), []) if "mse_readings" in m]
        if not runs:
            continue
        accuracy = float(np.mean([m["accuracy"] for m in runs]))
        readings = {k: float(np.mean([m["mse_readings"][k] for m in runs])) for k in READINGS}
        rows.append(
            {
                "n_generated": mix.n_generated,
                "n_real": mix.n_real,
                "accuracy": accuracy,
                **readings,
                "index_gap2_per_mistake": readings["index_mse"] / max(1 - accuracy, 1e-12),
                "random_mistake_gap2": random_gap(len(runs[0]["classes"])),
            }
        )
    return pd.DataFrame(rows)


def paper_mse_fit() -> tuple[pd.DataFrame, str]:
    """Which readings of the paper's "mse" can reach its Table 2 values at its accuracies
    (38 classes), from `metrics.reading_bounds`; and a verdict computed from that table."""

    data = paper_results()
    paper, n = pd.DataFrame(data["rows"]), data["n_classes"]
    bounds = [reading_bounds(a, n) for a in paper["accuracy"]]
    rows = []
    for reading in READINGS:
        fits = [
            lo <= v <= hi
            for v, b in zip(paper["mse"], bounds, strict=True)
            for lo, hi in [b[reading]]
        ]
        rows.append(
            {
                "reading": reading,
                "lowest possible": min(b[reading][0] for b in bounds),
                "highest possible": max(b[reading][1] for b in bounds),
                "paper rows it can reach": f"{sum(fits)} of {len(fits)}",
            }
        )
    table = pd.DataFrame(rows).set_index("reading")
    reachable = [
        r for r in READINGS if table.loc[r, "paper rows it can reach"].startswith(f"{len(paper)} ")
    ]
    impossible = [r for r in READINGS if r not in reachable]
    per_mistake = paper["mse"] / (1 - paper["accuracy"])
    rms_per_mistake = paper["mse"] ** 2 / (1 - paper["accuracy"])
    true_class_p = np.exp(-paper["mse"])
    text = (
        f"Over {n} classes at the paper's accuracies ({paper['accuracy'].min():.3f}-"
        f'{paper["accuracy"].max():.3f}), its "mse" values ({paper["mse"].min():.2f}-'
        f"{paper['mse'].max():.2f}) cannot be {' or '.join(impossible) or 'any reading'}"
        f" (they never exceed {table.loc['brier', 'highest possible']:g} for the Brier score, "
        f"{table.loc['onehot_mse', 'highest possible']:.3f} for one-hot MSE). "
        f"They can be {', '.join(reachable)}, with conditions. As the squared class-index "
        f"error, each mistake would be {per_mistake.min():.0f}-{per_mistake.max():.0f} "
        f"squared index steps off, and as its root {rms_per_mistake.min():.0f}-"
        f"{rms_per_mistake.max():.0f}, against {random_gap(n):.0f} for a mistake on a "
        "random class: either needs mistakes among alphabetically near classes (PatternNet "
        "has such pairs: parking lot / parking space, oil gas field / oil well, runway / "
        "runway marking). As cross-entropy, the true class would get a geometric-mean "
        f"probability of {true_class_p.min():.3f}-{true_class_p.max():.3f} (chance "
        f"{1 / n:.3f}): a nearly uniform softmax at over 90% accuracy, which a fine-tuned "
        "ViT does not produce."
    )
    return table, text
