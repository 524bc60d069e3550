"""The stage pages' tables and figures (notebooks 01-03 call and show these): the
command that remakes a page, a stage's summary, the LoRA's loss and samples, Figure 1, a
cell's curves and confusion matrix. None writes a file; `save_figure` does, where asked."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from synthaug.config import StudyConfig
from synthaug.data import ImageLoader, prepare_data, read_generated_manifest
from synthaug.io import atomic_write_bytes
from synthaug.paths import shown

SUMMARY_KEYS = ("accuracy", "macro_f1", "loss", "mse", "brier", "n_test")


def page_command(cfg: StudyConfig, stage: str) -> str:
    """Markdown: the command that makes this page again from this run's own config."""
    config = shown(cfg.paths.config)
    line = f"`synthaug run -f {config} --stage {stage} --rebuild`"
    return f"This page is made by {line} (the run's own resolved profile)."


def summary_table(cfg: StudyConfig, summary: dict) -> pd.DataFrame:
    """A stage's summary as a two-column table: paths relative to the run folder, nested
    figures flattened (`bench.train_s`), floats rounded."""
    rows = {}
    for key, value in summary.items():
        items = value.items() if isinstance(value, dict) else [("", value)]
        for sub, item in items:
            rows[f"{key}.{sub}" if sub else key] = _shown_value(cfg, item)
    return pd.DataFrame({"value": list(rows.values())}, index=list(rows))


def _shown_value(cfg: StudyConfig, value):
    """A summary value as the page shows it: paths through `paths.shown`, floats rounded,
    lists counted."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return f"{len(value)} entries"
    return shown(value, cfg.run_dir)


def cell_summary(metrics: dict) -> pd.DataFrame:
    """One row: which cell, its headline metrics and its timings."""
    cell = metrics["cell"]
    row = {
        "cell": cell["name"],
        "kind": cell["kind"],
        "n_generated": cell["n_generated"],
        "n_real": cell["n_real"],
        "seed": cell["seed"],
        "arm": cell.get("arm", "lora") if cell["n_generated"] else "",
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
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, classes, rotation=90)
    ax.set_yticks(ticks, classes)
    fig.colorbar(image, ax=ax, label="share of true class", fraction=0.046)
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
    paths = sorted(Path(lora_folder, "samples").glob("epoch_*.png"))
    return [(p.stem.replace("_", " "), Image.open(p)) for p in paths]


def figure1(
    cfg, n_classes: int | None = None, per_class: int = 4, arm: str = "lora"
) -> Figure | None:
    """The paper's Figure 1, with enough images to judge: for each class (default: all), a
    row of `per_class` generated images of `arm`, then `per_class` real pool images. None,
    with a note, while other generation shards still run (the set's manifest is written
    when the last one finishes). It writes nothing: `save_figure` does, where asked."""
    folder = cfg.paths.arm(arm)  # in 04: the first generator seed's (cfg.first_generator())
    if not (folder / "manifest.csv").exists() and any(folder.glob("**/manifest.shard*of*.csv")):
        print("Figure 1 follows once every generation shard has finished.")
        return None

    manifest = prepare_data(cfg)
    generated = read_generated_manifest(folder / "manifest.csv")
    load = ImageLoader(cfg.dataset, cfg.paths.root)
    classes = manifest.classes[:n_classes]
    fig, axes = image_grid(len(classes), 2 * per_class, (1.1, 1.1))
    for row, label in enumerate(classes):
        fakes = [r for r in generated if r.label == label][:per_class]
        reals = [r for r in manifest.split("pool") if r.label == label][:per_class]
        for first, records in ((0, fakes), (per_class, reals)):
            for column, record in enumerate(records, start=first):
                axes[row, column].imshow(load(record))
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    axes[0, 0].set_title(f"generated ({arm})", loc="left", fontsize="small")
    axes[0, per_class].set_title("real", loc="left", fontsize="small")
    fig.subplots_adjust(wspace=0.04, hspace=0.04, left=0.16, right=0.99, top=0.97, bottom=0.01)
    return fig


def image_grid(
    n_rows: int, n_columns: int, inches: tuple[float, float]
) -> tuple[Figure, np.ndarray]:
    """A figure of `n_rows` x `n_columns` image axes, `inches` (width, height) each, with
    room on the left for a label per row; ticks and frames hidden, labels kept."""
    width, height = inches
    fig, axes = plt.subplots(
        n_rows,
        n_columns,
        figsize=(width * n_columns + 1.6, height * n_rows + 0.4),
        squeeze=False,
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
    return fig, axes


def save_figure(fig: Figure | None, path: Path) -> None:
    """Write `fig` as a PNG at `path` atomically (nothing when there is no figure yet)."""
    if fig is None:
        return
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    atomic_write_bytes(path, png.getvalue())
