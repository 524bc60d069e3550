"""The study's answer in words: the headline lines, the conclusion paragraph, what the
LoRA adds over the other arms, what the intervals cover, and which models ran. Every
number and verdict comes from the tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from synthaug.analysis.intervals import VERDICT, compare, covers, interval, interval_text
from synthaug.analysis.tables import baselines, table2
from synthaug.classify.results import finished_cells
from synthaug.config import StudyConfig
from synthaug.data import prepare_data
from synthaug.families import family_named
from synthaug.models import backbone_kind
from synthaug.paths import shown


def models_used(cfg: StudyConfig) -> str:
    """One paragraph naming the generator family and base, and the classifier backbone in
    whose features the quality metrics are measured."""

    family = family_named(cfg.generator.family)
    backbone, base = cfg.classifier.model, shown(cfg.generator.base_model)
    return (
        f"Generator: {family.title} (`{family.pipeline_class}`), base `{base}`"
        f", one LoRA for all classes. Classifier: `{backbone}` ({backbone_kind(backbone)}, "
        f"{cfg.classifier.mode.replace('_', ' ')}); the Fréchet distance, precision, recall, "
        "density, coverage and nearest-neighbour distances are measured in its features."
    )


def headline(cfg: StudyConfig) -> list[str]:
    """The study's answer in a few lines, from the finished cells alone (no model loaded)."""
    cells = finished_cells(cfg)
    return answer(table2(cfg, cells), baselines(cfg, cells), len(prepare_data(cfg).classes))


def answer(t2: pd.DataFrame, base: pd.DataFrame, n_classes: int) -> list[str]:
    """The best mix against real-only with its real images, and CAS against chance."""
    lines = []
    if not t2.empty:
        best = t2.loc[t2["accuracy"].idxmax()]
        mix = interval(best, "accuracy")
        line = (
            f"best mix, {int(best.n_generated)} generated + {int(best.n_real)} real: accuracy "
            + interval_text(*mix)
            + covers(best)
        )
        if not np.isnan(best.get("real_only_accuracy", np.nan)):
            same = interval(best, "real_only_accuracy")
            line += (
                f"; it {compare(mix, same)} its {int(best.n_real)} real images alone "
                f"({interval_text(*same)})"
            )
        lines.append(line)
    rows = base.set_index("baseline") if not base.empty else base
    if "generated only (CAS)" in rows.index:
        cas = rows.loc["generated only (CAS)"]
        line = (
            f"generated only (CAS), {int(cas.n_generated)} images: "
            + interval_text(*interval(cas, "accuracy"))
            + covers(cas)
            + f" (chance {1 / n_classes:.3f})"
        )
        if "real only, same count as CAS" in rows.index:
            real = rows.loc["real only, same count as CAS"]
            line += "; real only, as many images: " + interval_text(*interval(real, "accuracy"))
        lines.append(line)
    return lines


def arms_answer(table: pd.DataFrame) -> list[str]:
    """What the LoRA adds, and what the filter adds to it: the LoRA arm's CAS against each
    other arm's (the filtered arm's against the LoRA arm's), and in how many training
    sets the first interval lies above, below or across the second."""
    if table.empty:
        return []
    lines = []
    by_arm = {arm: rows.set_index(["n_generated", "n_real"]) for arm, rows in table.groupby("arm")}
    lora = by_arm.pop("lora", None)
    if lora is None:
        return []
    for arm, rows in by_arm.items():
        # the filter is read against the LoRA's set it filters; the LoRA against the others
        if arm == "filtered":
            first, second, line = rows, lora, "the filtered arm against the LoRA arm: "
        else:
            first, second, line = lora, rows, f"the LoRA against the {arm} arm: "
        shared = [key for key in rows.index if key in lora.index]
        verdicts = [
            VERDICT[
                compare(interval(first.loc[k], "accuracy"), interval(second.loc[k], "accuracy"))
            ]
            for k in shared
        ]
        cas = [k for k in shared if k[1] == 0]
        if cas:
            line += (
                "CAS "
                + interval_text(*interval(first.loc[cas[0]], "accuracy"))
                + " against "
                + interval_text(*interval(second.loc[cas[0]], "accuracy"))
                + "; "
            )
        counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
        line += ", ".join(f"{v} in {n} of {len(verdicts)}" for v, n in counts.items())
        lines.append(line + " training sets")
    return lines


def conclusion(t2: pd.DataFrame, base: pd.DataFrame) -> str:
    """A short paragraph whose every number and verdict comes from the tables."""
    if t2.empty:
        return "No mix has finished yet."
    lines = []
    verdicts = []
    for row in t2.itertuples():
        if "real_only_accuracy" not in t2.columns or np.isnan(row.real_only_accuracy):
            continue
        mix, alone = interval(row, "accuracy"), interval(row, "real_only_accuracy")
        verdict = compare(mix, alone)
        verdicts.append(verdict)
        lines.append(
            f"- {row.n_generated} generated + {row.n_real} real: accuracy "
            f"{interval_text(*mix)} {verdict} real-only with the same {row.n_real} real "
            f"images ({interval_text(*alone)})."
        )
    best = t2.loc[t2["accuracy"].idxmax()]
    head = (
        f"Across {len(t2)} mixes, mean test accuracy ranges from {t2['accuracy'].min():.3f} "
        f"to {t2['accuracy'].max():.3f} (best: {int(best.n_generated)} generated + "
        f"{int(best.n_real)} real)."
    )
    if verdicts:
        counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
        head += (
            " Against the real-only baseline with the same real images, the mix "
            + "; ".join(f"{verb} it in {n} of {len(verdicts)} mixes" for verb, n in counts.items())
            + "."
        )
    for row in base.itertuples():
        head += f" {row.baseline[0].upper()}{row.baseline[1:]}: {row.accuracy:.3f}."
    return head + "\n\n" + "\n".join(lines)


def interval_note(cfg: StudyConfig) -> str:
    """What randomness every interval of the report includes, in words."""
    generators, classifiers = len(cfg.study.generator_seeds), len(cfg.study.seeds)
    real = (
        f"Real-only intervals are t-intervals over the {classifiers} classifier seeds (which "
        "real images are drawn, the head's initialisation and order): no generator is involved."
    )
    if generators < 2:
        return (
            "Every interval is a 95% t-interval over the classifier seeds only: the LoRA and "
            "its synthetic sets were made once (one generator seed), so the generator's own "
            "randomness is not in them (`study.generator_seeds` adds it). " + real
        )
    return (
        f"Intervals of cells with generated images (mixes, CAS) are 95% t-intervals over "
        f"the {generators} generator seeds of each seed's mean over the {classifiers} "
        "classifier seeds: each generator seed is its own LoRA (initialisation, noise, "
        "order) and its own generated images, so the intervals include the generator's "
        "randomness as well as the classifier's draws (though not that of the pretrained "
        "base, which is shared). " + real + " The same-real comparison and the verdicts use "
        "these intervals."
    )
