"""The analysis page's figures (notebook 04): each one function of the study
(`context.Study`), called from a cell of its own; it reads what it plots from the study,
which computes that once. Adding a figure: a function here and a cell in 04."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthaug.analysis import report, tables
from synthaug.analysis.context import Study
from synthaug.data import ImageLoader, ImageRecord, prepare_data


def figure1(study: Study) -> Figure | None:
    """The paper's Figure 1 for the first generator seed's synthetic set."""
    return report.figure1(study.cfg.first_generator())


def curves(study: Study) -> Figure:
    """The paper's Figures 2-4: test accuracy and loss per epoch for every mix (mean over
    seeds), with the train curves dashed."""
    # deferred: seaborn (with matplotlib) is imported only when a figure is drawn
    import seaborn as sns

    curves = tables.curves(study.paper_cells)

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


def accuracy_vs_share(study: Study) -> Figure:
    """Accuracy against the generated share, with 95% CIs: each mix, the real-only model
    with the same real images, the full-size real-only model and generated-only (CAS)."""
    table2, baselines = study.table2, study.baselines
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


def arms(study: Study) -> Figure | None:
    """Accuracy against the generated share for each generation arm (CAS at share 1),
    with the real-only model trained on each mix's real images alone (None: no cells)."""
    arms, table2 = study.arms, study.table2
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


def sample_efficiency(study: Study) -> Figure | None:
    """Accuracy against real images per class (log axis): real only, and real plus each
    arm's fixed synthetic set, with 95% CIs over seeds (None, with a note: no sweep)."""
    table = study.sample_efficiency
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


def per_class(study: Study) -> Figure:
    """Per-class test accuracy (mean over seeds) for every training set."""
    # deferred: seaborn (with matplotlib) is imported only when a figure is drawn
    import seaborn as sns

    per_class = tables.per_class(study.paper_cells)

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


def ceilings(study: Study) -> Figure:
    """CAS per class beside what it is measured against."""
    ceilings = study.ceilings
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


def nearest(study: Study, n_classes: int = 8) -> Figure:
    """Memorisation check: for the first classes, the two generated images nearest to a
    LoRA-training image, each beside that image, with their cosine distance in the
    classifier's features; and every generated vs real-test image's nearest distance."""

    cfg, nearest = study.cfg, study.nearest
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


def synthetic_quality(study: Study) -> Figure:
    """Synthetic-set quality per class: CAS and the real-vs-generated Fréchet distance."""
    quality = study.quality.drop("all classes", errors="ignore")
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
