"""Tables and figures the notebooks display (the notebooks only call and show these)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

SUMMARY_KEYS = ("accuracy", "macro_f1", "loss", "mse", "brier", "n_test")


def cell_summary(metrics: dict) -> pd.DataFrame:
    """One row: which cell, its headline metrics and its timings."""
    cell = metrics["cell"]
    row = {
        "cell": cell["name"],
        "kind": cell["kind"],
        "n_generated": cell["n_generated"],
        "n_real": cell["n_real"],
        "seed": cell["seed"],
        **{key: metrics[key] for key in SUMMARY_KEYS},
        **{f"time_{k}": round(v, 2) for k, v in metrics["timings"].items()},
    }
    return pd.DataFrame([row]).set_index("cell")


def plot_history(metrics: dict) -> Figure:
    """Accuracy and loss per epoch, train and test (the paper's Figures 2-4 for one mix)."""
    history = pd.DataFrame(metrics["history"])
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for split, style in (("train", "--"), ("test", "-")):
        acc_ax.plot(history["epoch"], history[f"{split}_accuracy"], style, label=split)
        loss_ax.plot(history["epoch"], history[f"{split}_loss"], style, label=split)
    acc_ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss")
    for ax in (acc_ax, loss_ax):
        ax.legend()
        ax.grid(alpha=0.3)
    cell = metrics["cell"]
    fig.suptitle(f"generated {cell['n_generated']} : real {cell['n_real']}, seed {cell['seed']}")
    fig.tight_layout()
    return fig


def plot_confusion(metrics: dict) -> Figure:
    """Row-normalised confusion matrix on the real test images."""
    matrix = np.asarray(metrics["confusion"], dtype=float)
    matrix = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    classes = metrics["classes"]
    size = max(4.0, 0.35 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(
        matrix,
        ax=ax,
        cmap="viridis",
        vmin=0,
        vmax=1,
        xticklabels=classes,
        yticklabels=classes,
        square=True,
        cbar_kws={"label": "share of true class"},
    )
    ax.set(xlabel="predicted", ylabel="true", title=f"accuracy {metrics['accuracy']:.3f}")
    fig.tight_layout()
    return fig


def plot_lora_loss(lora_folder) -> Figure:
    """Flow-matching loss per step and its per-epoch mean."""
    losses = pd.read_csv(f"{lora_folder}/loss.csv")
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.plot(losses["step"], losses["loss"], alpha=0.35, label="step")
    means = losses.groupby("epoch").agg(step=("step", "max"), loss=("loss", "mean"))
    ax.plot(means["step"], means["loss"], "o-", label="epoch mean")
    ax.set(xlabel="optimizer step", ylabel="flow-matching loss", title="LoRA training")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def lora_sample_grids(lora_folder) -> list[tuple[str, object]]:
    """(epoch label, PIL image) of each per-epoch sample grid, in order."""
    from pathlib import Path

    from PIL import Image

    paths = sorted(Path(lora_folder, "samples").glob("epoch_*.png"))
    return [(p.stem.replace("_", " "), Image.open(p)) for p in paths]


def aggregate(cells: list[dict], metric: str = "accuracy") -> pd.DataFrame:
    """Per (n_generated, n_real): mean of `metric` over seeds with a 95% Student-t CI."""
    from synthaug.metrics import mean_ci

    groups: dict[tuple[int, int], list[float]] = {}
    kinds: dict[tuple[int, int], str] = {}
    for metrics in cells:
        cell = metrics["cell"]
        key = (cell["n_generated"], cell["n_real"])
        groups.setdefault(key, []).append(metrics[metric])
        kinds[key] = cell["kind"]
    rows = []
    for (n_generated, n_real), values in sorted(groups.items()):
        interval = mean_ci(values)
        rows.append(
            {
                "n_generated": n_generated,
                "n_real": n_real,
                "kind": kinds[(n_generated, n_real)],
                "seeds": interval.n,
                metric: interval.mean,
                f"{metric}_ci_low": interval.low,
                f"{metric}_ci_high": interval.high,
            }
        )
    return pd.DataFrame(rows)


def figure1(cfg, n_classes: int = 6, per_class: int = 2) -> Figure:
    """The paper's Figure 1: generated and real images side by side, a class per row
    (columns alternate generated, real). Saved as `generated/figure1.png`."""
    from synthaug.data import ImageLoader, prepare_data, read_generated_manifest
    from synthaug.generate import generated_dir

    manifest = prepare_data(cfg)
    generated = read_generated_manifest(generated_dir(cfg) / "manifest.csv")
    load = ImageLoader(cfg.dataset, generated_dir(cfg))
    classes = manifest.classes[:n_classes]
    fig, axes = plt.subplots(
        len(classes),
        2 * per_class,
        figsize=(2.2 * 2 * per_class, 2.2 * len(classes)),
        squeeze=False,
    )
    for row, label in enumerate(classes):
        fakes = [r for r in generated if r.label == label][:per_class]
        reals = [r for r in manifest.split("pool") if r.label == label][:per_class]
        for pair, (fake, real) in enumerate(zip(fakes, reals, strict=False)):
            for offset, (record, kind) in enumerate(((fake, "generated"), (real, "real"))):
                ax = axes[row, 2 * pair + offset]
                ax.imshow(load(record))
                if row == 0:
                    ax.set_title(kind)
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(generated_dir(cfg) / "figure1.png", dpi=100)
    return fig
