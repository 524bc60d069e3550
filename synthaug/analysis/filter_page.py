"""The filtered arm's section of its 02 page, "What the filter keeps": kept and dropped
candidates side by side for a few classes, the scores per class, and what keeping cost.
Each part reads the arm's records (`synthaug.filtering`); none writes a file."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from synthaug.analysis.report import image_grid
from synthaug.config import StudyConfig
from synthaug.filtering import FILTERED, is_kept, read_candidates, read_cost


def section(cfg: StudyConfig, arm: str, n_classes: int = 4, per_side: int = 4) -> list[object]:
    """The section's parts in page order (a Markdown heading and text, two figures, the
    cost table); nothing for any other arm, or before the filter has run."""
    if arm != FILTERED or not is_kept(cfg):
        return []
    # deferred: IPython exists only inside a notebook kernel
    from IPython.display import Markdown

    rows = read_candidates(cfg)
    return [
        Markdown(_text(cfg, rows)),
        kept_and_dropped(cfg, rows, n_classes, per_side),
        scores_per_class(rows),
        cost_table(cfg),
    ]


def _text(cfg: StudyConfig, rows: list[dict]) -> str:
    kept = [r["score"] for r in rows if r["kept"]]
    dropped = [r["score"] for r in rows if not r["kept"]]
    k = cfg.generation.oversample
    return (
        "## What the filter keeps\n\n"
        f"Of {len(rows)} candidates (the LoRA arm's {len(kept)} images and "
        f"{len(rows) - len(kept)} more from the same seed sequence: {k} per kept image), "
        f"the {len(kept)} "
        "that a linear head trained on the LoRA's real images alone finds most like their "
        f"class, per class. Mean score (probability of the intended class): kept "
        f"{np.mean(kept):.3f}, dropped {np.mean(dropped):.3f}. The scorer and its training "
        "images: `scorer.json`; every candidate's score and rank: `candidates.csv`."
    )


def kept_and_dropped(cfg: StudyConfig, rows: list[dict], n_classes: int, per_side: int) -> Figure:
    """For `n_classes` classes spread over the alphabet, the best-ranked kept candidates
    beside the worst-ranked dropped ones, each titled with its score."""
    classes = sorted({r["label"] for r in rows})
    chosen = [
        classes[i]
        for i in np.linspace(0, len(classes) - 1, min(n_classes, len(classes))).astype(int)
    ]
    fig, axes = image_grid(len(chosen), 2 * per_side, (1.2, 1.3))
    for line, label in enumerate(chosen):
        ranked = sorted((r for r in rows if r["label"] == label), key=lambda r: r["rank"])
        kept = [r for r in ranked if r["kept"]][:per_side]
        dropped = [r for r in ranked if not r["kept"]][-per_side:]
        for column, row in enumerate(kept + dropped):
            axes[line, column].imshow(Image.open(cfg.paths.root / row["file"]).convert("RGB"))
            axes[line, column].set_title(f"{row['score']:.2f}", fontsize="x-small", pad=2)
        axes[line, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    fig.suptitle(f"kept (best {per_side})  |  dropped (worst {per_side})", fontsize="small")
    fig.subplots_adjust(wspace=0.05, hspace=0.3, left=0.16, right=0.99, top=0.9, bottom=0.01)
    plt.close(fig)  # shown where the page displays it, not again by the inline backend
    return fig


def scores_per_class(rows: list[dict]) -> Figure:
    """Every candidate's score per class, kept and dropped in two colours."""
    classes = sorted({r["label"] for r in rows})
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(classes) + 2), 3.4))
    jitter = np.random.default_rng(0)
    for kept, colour in ((False, "tab:grey"), (True, "tab:blue")):
        chosen = [r for r in rows if r["kept"] is kept]
        x = [classes.index(r["label"]) + jitter.uniform(-0.25, 0.25) for r in chosen]
        ax.scatter(
            x,
            [r["score"] for r in chosen],
            s=6,
            color=colour,
            alpha=0.6,
            label="kept" if kept else "dropped",
        )
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize="small")
    ax.set_ylabel("scorer's probability of the class")
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small", loc="upper right")
    fig.tight_layout()
    plt.close(fig)  # shown where the page displays it, not again by the inline backend
    return fig


def cost_table(cfg: StudyConfig) -> pd.DataFrame:
    """What keeping cost: images generated for the arm and the seconds it took."""
    cost = read_cost(cfg)
    seconds = cost["new_candidates_seconds"]
    rows = {
        "kept images": cost["kept"],
        "candidates (the LoRA arm's images among them)": cost["candidates"],
        "new candidates generated": cost["new_candidates"],
        "their generation time (s; 0 if made by an earlier call)": round(seconds, 1),
        "scoring time (s: backbone features and the scorer)": round(cost["scoring_seconds"], 1),
    }
    return pd.DataFrame({"value": pd.Series(list(rows.values()), dtype=object)}).set_axis(
        list(rows)
    )
