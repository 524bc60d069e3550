"""Tables and figures the notebooks display (the notebooks only call and show these)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthaug.config import StudyConfig, shown_path

SUMMARY_KEYS = ("accuracy", "macro_f1", "loss", "mse", "brier", "n_test")


def page_command(cfg: StudyConfig, stage: str) -> str:
    """Markdown: the command that makes this page again from this run's own config."""
    config = shown_path(cfg.paths.config)
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
    if isinstance(value, str) and value.startswith(str(cfg.run_dir)):
        return value.removeprefix(str(cfg.run_dir)).lstrip("/") or "."
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return f"{len(value)} entries"
    return value


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
    from pathlib import Path

    from PIL import Image

    paths = sorted(Path(lora_folder, "samples").glob("epoch_*.png"))
    return [(p.stem.replace("_", " "), Image.open(p)) for p in paths]


def figure1(
    cfg, n_classes: int | None = None, per_class: int = 4, arm: str = "lora"
) -> Figure | None:
    """The paper's Figure 1, with enough images to judge: for each class (default: all), a
    row of `per_class` generated images of `arm`, then `per_class` real pool images. Saved
    as `figure1.png` in the arm's folder. None, with a note, while other generation shards
    still run (the set's manifest is written when the last one finishes)."""
    from synthaug.data import ImageLoader, prepare_data, read_generated_manifest

    folder = cfg.paths.arm(arm)  # in 04: the first generator seed's (cfg.first_generator())
    if not (folder / "manifest.csv").exists() and any(folder.glob("manifest.shard*of*.csv")):
        print("Figure 1 follows once every generation shard has finished.")
        return None

    manifest = prepare_data(cfg)
    generated = read_generated_manifest(folder / "manifest.csv")
    load = ImageLoader(cfg.dataset, cfg.paths.root)
    classes = manifest.classes[:n_classes]
    fig, axes = plt.subplots(
        len(classes),
        2 * per_class,
        figsize=(1.1 * 2 * per_class + 1.6, 1.1 * len(classes) + 0.4),
        squeeze=False,
    )
    for row, label in enumerate(classes):
        fakes = [r for r in generated if r.label == label][:per_class]
        reals = [r for r in manifest.split("pool") if r.label == label][:per_class]
        for first, records in ((0, fakes), (per_class, reals)):
            for column, record in enumerate(records, start=first):
                axes[row, column].imshow(load(record))
        axes[row, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    axes[0, 0].set_title(f"generated ({arm})", loc="left", fontsize="small")
    axes[0, per_class].set_title("real", loc="left", fontsize="small")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.spines[:].set_visible(False)
    fig.subplots_adjust(wspace=0.04, hspace=0.04, left=0.16, right=0.99, top=0.97, bottom=0.01)
    fig.savefig(folder / "figure1.png", dpi=100)
    return fig


def plot_nearest(cfg, nearest: pd.DataFrame, n_classes: int = 8) -> Figure:
    """Memorisation check: for the first classes, the two generated images nearest to a
    LoRA-training image, each beside that image, with their cosine distance in the
    classifier's features; and every generated vs real-test image's nearest distance."""
    from synthaug.data import ImageLoader, ImageRecord, prepare_data

    lora = {r.ref: r for r in prepare_data(cfg).split("lora")}
    load = ImageLoader(cfg.dataset, cfg.paths.root)
    generated = nearest[nearest["kind"] == "generated"]
    classes = list(dict.fromkeys(generated["label"]))[:n_classes]
    fig = plt.figure(figsize=(12, 1.3 * len(classes) + 3))
    grid = fig.add_gridspec(len(classes) + 2, 5, width_ratios=[1, 1, 0.3, 1, 1])
    for row, label in enumerate(classes):
        closest = generated[generated["label"] == label].nsmallest(2, "distance")
        for pair, item in enumerate(closest.itertuples()):
            fake = ImageRecord(item.ref, item.label, item.sha256, item.split)
            for offset, record in enumerate((fake, lora[item.nearest_lora_ref])):
                ax = fig.add_subplot(grid[row, 3 * pair + offset])
                ax.imshow(load(record))
                ax.set_xticks([])
                ax.set_yticks([])
                if offset == 0:
                    ax.set_title(f"d = {item.distance:.3f}", fontsize="x-small", loc="left")
                if pair == 0 and offset == 0:
                    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize="small")
    ax = fig.add_subplot(grid[len(classes) :, :])
    for kind, frame in nearest.groupby("kind"):
        ax.hist(frame["distance"], bins=40, alpha=0.6, label=kind, density=True)
    ax.set(
        xlabel="cosine distance to the nearest LoRA-training image of the class", ylabel="density"
    )
    ax.legend()
    fig.suptitle("generated image | its nearest LoRA-training image", fontsize="small")
    fig.tight_layout()
    return fig


def plot_ceilings(ceilings: pd.DataFrame) -> Figure:
    """CAS per class beside what it is measured against."""
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(ceilings) + 1.8))
    ceilings.iloc[::-1].plot.barh(ax=ax, width=0.8)
    ax.set(xlabel="test accuracy on real images", ylabel="", xlim=(0, 1))
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles[::-1], labels[::-1], fontsize="small", loc="upper left", bbox_to_anchor=(1, 1)
    )
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def plot_curves(curves: pd.DataFrame) -> Figure:
    """The paper's Figures 2-4: test accuracy and loss per epoch for every mix (mean over
    seeds), with the train curves dashed."""
    import seaborn as sns

    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(12, 4.2))
    mixes = curves[curves["kind"] == "mix"]
    means = mixes.groupby(["n_generated", "n_real", "epoch"]).mean(numeric_only=True)
    palette = sns.color_palette("viridis", n_colors=means.index.droplevel(2).nunique())
    for color, ((n_generated, n_real), frame) in zip(
        palette, means.groupby(level=[0, 1]), strict=True
    ):
        epochs = frame.index.get_level_values("epoch")
        label = f"{n_generated}:{n_real}"
        acc_ax.plot(epochs, frame["test_accuracy"], color=color, label=label)
        acc_ax.plot(epochs, frame["train_accuracy"], "--", color=color, alpha=0.5)
        loss_ax.plot(epochs, frame["test_loss"], color=color, label=label)
        loss_ax.plot(epochs, frame["train_loss"], "--", color=color, alpha=0.5)
    acc_ax.set(xlabel="epoch", ylabel="accuracy (test solid, train dashed)")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss")
    acc_ax.legend(title="generated:real", fontsize="small")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_share(table2: pd.DataFrame, baselines: pd.DataFrame) -> Figure:
    """Accuracy against the generated share, with 95% CIs: each mix, the real-only model
    with the same real images, the full-size real-only model and generated-only (CAS)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.5))

    _errorbars(ax, table2["share"], table2, "accuracy", "mix (generated + real)", fmt="o-")
    _same_real_images(ax, table2)
    largest_real = baselines["n_real"].max() if len(baselines) else 0
    for row in baselines.itertuples():
        # full-size real only in black, real only at the CAS count in grey, CAS in red
        style = "tab:red" if not row.n_real else "k" if row.n_real == largest_real else "tab:gray"
        if row.n_real:
            ax.axhline(row.accuracy, color=style, lw=1, label=f"{row.baseline}")
            if not np.isnan(row.accuracy_ci_low):
                ax.axhspan(row.accuracy_ci_low, row.accuracy_ci_high, color=style, alpha=0.08)
        else:
            _errorbars(
                ax,
                [1.0],
                baselines[baselines["n_real"] == 0],
                "accuracy",
                row.baseline,
                fmt="D",
                color=style,
            )
    if table2["paper_accuracy"].notna().any():
        ax.plot(table2["share"], table2["paper_accuracy"], "x:", label="paper (Table 2)")
    ax.set(
        xlabel="share of generated images in the training set",
        ylabel="test accuracy",
        xlim=(-0.02, 1.05),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_per_class(per_class: pd.DataFrame) -> Figure:
    """Per-class test accuracy (mean over seeds) for every training set."""
    import seaborn as sns

    fig, ax = plt.subplots(
        figsize=(max(6, 0.45 * per_class.shape[1] + 3), 0.4 * per_class.shape[0] + 2)
    )
    sns.heatmap(
        per_class,
        ax=ax,
        cmap="magma",
        vmin=0,
        vmax=1,
        annot=per_class.shape[1] <= 12,
        fmt=".2f",
        cbar_kws={"label": "test accuracy"},
    )
    ax.set(xlabel="class", ylabel="training set")
    fig.tight_layout()
    return fig


def plot_quality(quality: pd.DataFrame) -> Figure:
    """Synthetic-set quality per class: CAS and the real-vs-generated Fréchet distance."""
    quality = quality.drop("all classes", errors="ignore")
    columns = [c for c in ("cas", "frechet_distance") if c in quality]
    fig, axes = plt.subplots(
        1, max(1, len(columns)), figsize=(6 * max(1, len(columns)), 4.5), squeeze=False
    )
    titles = {
        "cas": "Classification Accuracy Score (train on generated, test on real)",
        "frechet_distance": "Fréchet distance, real vs generated features",
    }
    for ax, column in zip(axes[0], columns, strict=False):
        quality[column].sort_values().plot.barh(ax=ax)
        ax.set(title=titles[column], xlabel=column, ylabel="")
        ax.title.set_fontsize("small")
    fig.tight_layout()
    return fig


def _errorbars(ax, x, frame: pd.DataFrame, column: str, label: str, **style) -> None:
    """`frame[column]` against `x` with its 95% CI (`<column>_ci_low/high`) as error bars."""
    low = (frame[column] - frame[f"{column}_ci_low"]).fillna(0)
    high = (frame[f"{column}_ci_high"] - frame[column]).fillna(0)
    ax.errorbar(x, frame[column], yerr=[low, high], capsize=3, label=label, **style)


def _same_real_images(ax, table2: pd.DataFrame, **style) -> None:
    """The real-only model trained on each mix's real images alone, where it ran."""
    if "real_only_accuracy" in table2:
        _errorbars(
            ax,
            table2["share"],
            table2,
            "real_only_accuracy",
            "real only, same real images",
            fmt="s--",
            **style,
        )


def plot_arms(arms: pd.DataFrame, table2: pd.DataFrame) -> Figure | None:
    """Accuracy against the generated share for each generation arm (CAS at share 1),
    with the real-only model trained on each mix's real images alone (None: no cells)."""
    if arms.empty:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for arm, rows in arms.groupby("arm", sort=False):
        _errorbars(ax, rows["share"], rows, "accuracy", arm, fmt="o-")
    _same_real_images(ax, table2, color="k")
    ax.set(xlabel="share of generated images", ylabel="test accuracy", xlim=(-0.02, 1.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_sample_efficiency(table: pd.DataFrame) -> Figure | None:
    """Accuracy against real images per class (log axis): real only, and real plus each
    arm's fixed synthetic set, with 95% CIs over seeds (None, with a note: no sweep)."""
    if table.empty:
        print("No sample-efficiency sweep in this study (study.sample_efficiency).")
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for series, rows in table.groupby("series", sort=False):
        added = int(rows["generated_per_class"].iloc[0])
        label = series if not added else f"real + {added} {series} images per class"
        _errorbars(ax, rows["real_per_class"], rows, "accuracy", label, fmt="o-", alpha=0.9)
    ax.set_xscale("log")
    ticks = sorted(table["real_per_class"].unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set(xlabel="real training images per class", ylabel="test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
