"""Stage 4: the study's tables and numbers, computed from the cells' metrics.json files.

Table 1 (the LoRA settings actually used), Table 2 (per mix: counts, mse and accuracy,
mean and 95% CI over seeds, beside the paper's own values and the same-count real-only
baseline), per-epoch curves (Figures 2-4), per-class accuracy, the synthetic set's
quality per class (Classification Accuracy Score and Fréchet distance in the classifier
backbone's feature space), and a written conclusion computed from these numbers.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import yaml

from synthaug.classify import CellRunner
from synthaug.config import StudyConfig, project_root
from synthaug.data import ImageRecord
from synthaug.design import study_cells
from synthaug.io import read_json
from synthaug.metrics import frechet_distance, mean_ci


@dataclass
class Analysis:
    table1: pd.DataFrame
    table2: pd.DataFrame
    baselines: pd.DataFrame
    curves: pd.DataFrame
    per_class: pd.DataFrame
    quality: pd.DataFrame
    ceilings: pd.DataFrame
    nearest: pd.DataFrame
    mse_readings: pd.DataFrame
    paper_mse_fit: pd.DataFrame
    paper_mse_text: str
    conclusion: str
    answer: list[str]


def collect(runner: CellRunner) -> list[dict]:
    """The metrics of every study cell that is done with the current settings."""
    return [runner.metrics(c) for c in study_cells(runner.cfg.study) if runner.is_done(c)]


def table1(cfg: StudyConfig) -> pd.DataFrame:
    """The paper's Table 1: the LoRA's training settings, from the config actually used."""
    from synthaug.models import base_name

    g = cfg.generator
    summary_path = cfg.paths.lora_summary
    summary = read_json(summary_path) if summary_path.exists() else {}
    rows = {
        "base model": base_name(summary["base_model"]) if summary else g.base_model,
        "LoRA rank / alpha / dropout": f"{g.lora.rank} / {g.lora.alpha:g} / {g.lora.dropout:g}",
        "target modules": ", ".join(g.lora.target_modules),
        "training images": summary.get("n_images", "not trained yet"),
        "repeats per epoch": g.repeats,
        "epochs": g.epochs,
        "optimizer steps": summary.get("steps", "not trained yet"),
        "batch size": g.batch_size,
        "optimizer / learning rate": f"{g.optimizer} / {g.learning_rate:g}",
        "schedule (warm-up steps)": f"{g.lr_scheduler} ({g.lr_warmup_steps})",
        "resolution": f"{g.resolution}x{g.resolution}",
        "timestep sampling": g.timestep_sampling,
        "caption dropout": f"{g.caption_dropout:g}",
        "prompt": cfg.generation.prompt_template,
    }
    paper = paper_results()["table1"]
    stated = {
        "epochs": paper["Number of epochs"],
        "optimizer / learning rate": paper["Optimizer"],
        "schedule (warm-up steps)": paper["LR scheduler"],
        '"Step" (undefined in the paper)': paper["Step"],
    }
    rows.setdefault('"Step" (undefined in the paper)', "")
    return pd.DataFrame(
        {
            "this study": [str(v) for v in rows.values()],
            "paper (Table 1)": [str(stated.get(k, "")) for k in rows],
        },
        index=list(rows),
    )


def paper_results() -> dict:
    """The paper's own Tables 1 and 2 (`params/paper_table2.yaml`)."""
    return yaml.safe_load((project_root() / "params" / "paper_table2.yaml").read_text())


def paper_table() -> pd.DataFrame:
    """The paper's own Table 2; nulls stay blank."""
    table = pd.DataFrame(paper_results()["rows"])
    table["share"] = (table["n_generated"] / (table["n_generated"] + table["n_real"])).round(3)
    return table


READINGS = ("index_mse", "index_rmse", "onehot_mse", "brier", "cross_entropy")


def random_gap(n_classes: int) -> float:
    """Mean squared class-index gap of a mistake that lands on any other class at random."""
    return n_classes * (n_classes + 1) / 6


def mse_readings(cfg: StudyConfig, cells: list[dict]) -> pd.DataFrame:
    """Per mix of this study: accuracy and every reading of the paper's "mse" (mean over
    seeds), with the mean squared index gap per mistake beside a random mistake's."""
    groups = _by_pair(cells)
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
    from synthaug.metrics import reading_bounds

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


def _interval_columns(values: list[float], name: str) -> dict:
    interval = mean_ci(values)
    return {name: interval.mean, f"{name}_ci_low": interval.low, f"{name}_ci_high": interval.high}


def _by_pair(cells: list[dict]) -> dict[tuple[int, int], list[dict]]:
    groups: dict[tuple[int, int], list[dict]] = {}
    for metrics in cells:
        key = (metrics["cell"]["n_generated"], metrics["cell"]["n_real"])
        groups.setdefault(key, []).append(metrics)
    return groups


def table2(cfg: StudyConfig, cells: list[dict]) -> pd.DataFrame:
    """Per mix: counts, mse and accuracy (mean, 95% CI over seeds), the same-count
    real-only accuracy, and the paper's values for the same generated share."""
    groups = _by_pair(cells)
    paper = paper_table().set_index("share")
    rows = []
    for mix in cfg.study.resolved_mixes():
        runs = groups.get((mix.n_generated, mix.n_real), [])
        if not runs:
            continue
        share = round(mix.n_generated / (mix.n_generated + mix.n_real), 3)
        row = {
            "n_real": mix.n_real,
            "n_generated": mix.n_generated,
            "share": share,
            "seeds": len(runs),
            **_interval_columns([m["mse"] for m in runs], "mse"),
            **_interval_columns([m["accuracy"] for m in runs], "accuracy"),
        }
        same = groups.get((0, mix.n_real), [])
        row.update(
            _interval_columns([m["accuracy"] for m in same], "real_only_accuracy") if same else {}
        )
        row["paper_accuracy"] = paper["accuracy"].get(share, np.nan)
        row["paper_mse"] = paper["mse"].get(share, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def baselines(cfg: StudyConfig, cells: list[dict]) -> pd.DataFrame:
    """Real-only at the full mix size, generated-only (CAS) and real-only with as many
    images as CAS: mean and CI over seeds."""
    groups = _by_pair(cells)
    study = cfg.study
    rows = []
    for label, key in (
        ("real only, full size", (0, study.mix_size)),
        ("real only, same count as CAS", (0, study.generated_only_count)),
        ("generated only (CAS)", (study.generated_only_count, 0)),
    ):
        if key in groups:
            rows.append(
                {
                    "baseline": label,
                    "n_generated": key[0],
                    "n_real": key[1],
                    "seeds": len(groups[key]),
                    **_interval_columns([m["accuracy"] for m in groups[key]], "accuracy"),
                }
            )
    return pd.DataFrame(rows)


def curves(cells: list[dict]) -> pd.DataFrame:
    """Per-epoch train/test accuracy and loss of every cell, long format."""
    rows = [
        {
            "n_generated": m["cell"]["n_generated"],
            "n_real": m["cell"]["n_real"],
            "kind": m["cell"]["kind"],
            "seed": m["cell"]["seed"],
            **epoch,
        }
        for m in cells
        for epoch in m["history"]
    ]
    return pd.DataFrame(rows)


def per_class(cells: list[dict]) -> pd.DataFrame:
    """Mean per-class test accuracy over seeds; a row per training set."""
    rows = {}
    for (n_generated, n_real), runs in sorted(_by_pair(cells).items()):
        frame = pd.DataFrame([m["per_class_accuracy"] for m in runs])
        rows[f"gen {n_generated} : real {n_real}"] = frame.mean()
    return pd.DataFrame(rows).T


def quality(runner: CellRunner, cells: list[dict]) -> pd.DataFrame:
    """Per class: CAS (test accuracy of the generated-only classifier, mean over seeds) and
    the Fréchet distance between real-pool and generated features of the classifier's
    frozen pretrained backbone, on equal counts per class (a seeded sample of the pool the
    size of the class's generated images). Features come from the shared feature cache;
    those missing (every one, in `classifier.mode: full`) are computed first."""

    cfg = runner.cfg
    generated_only = _by_pair(cells).get((cfg.study.generated_only_count, 0), [])
    table = pd.DataFrame(index=runner.classes)
    table.index.name = "class"
    if generated_only:
        table["cas"] = pd.DataFrame([m["per_class_accuracy"] for m in generated_only]).mean()
    if not cfg.paths.generated_manifest.exists():
        return table
    pairs = frechet_samples(runner.manifest.split("pool"), runner.generated())
    cache = runner.feature_cache
    cache.ensure([r for real, fake in pairs.values() for r in real + fake], runner.features)
    for label, (real, fake) in pairs.items():
        if min(len(real), len(fake)) > 1:
            table.loc[label, "frechet_distance"] = frechet_distance(
                cache.matrix(real).numpy(), cache.matrix(fake).numpy()
            )
            table.loc[label, "n_per_side"] = len(real)
    return table


def _resized_features(runner: CellRunner, cache, records: list[ImageRecord], size: int):
    """Cache the backbone's features of `records` reduced to `size` px (what a generator of
    that resolution could at best reproduce); return the records under their cache keys."""
    from dataclasses import replace

    from PIL import Image

    keyed = [replace(r, sha256=f"{r.sha256}@{size}px") for r in records]
    original = {k.sha256: r for k, r in zip(keyed, records, strict=True)}

    def compute(batch: list[ImageRecord]):
        images = [
            runner.load(original[r.sha256]).resize((size, size), Image.Resampling.BICUBIC)
            for r in batch
        ]
        return runner.backbone.features(images, runner.cfg.classifier.batch_size)

    cache.ensure(keyed, compute)
    return keyed


def ceilings(runner: CellRunner, cells: list[dict]) -> pd.DataFrame:
    """Per class, what CAS is measured against (all test accuracies, linear probe on the
    backbone's features): CAS itself; a generator that reproduced its LoRA-training images
    exactly, at its own resolution (a probe trained on those images reduced to
    `generator.resolution`, one seed); and real images of the same count as CAS."""
    from synthaug.classify import train_linear_head

    cfg = runner.cfg
    classes = runner.classes
    table = pd.DataFrame(index=classes)
    table.index.name = "class"
    groups = _by_pair(cells)
    for column, key in (
        ("cas", (cfg.study.generated_only_count, 0)),
        ("real_same_count", (0, cfg.study.generated_only_count)),
    ):
        if groups.get(key):
            table[column] = pd.DataFrame([m["per_class_accuracy"] for m in groups[key]]).mean()
    cache = runner.feature_cache
    size = cfg.generator.resolution
    lora = _resized_features(runner, cache, runner.manifest.split("lora"), size)
    test = runner.manifest.split("test")
    cache.ensure(test, runner.features)
    label = {name: i for i, name in enumerate(classes)}
    head, _ = train_linear_head(
        cache.matrix(lora),
        torch.tensor([label[r.label] for r in lora]),
        cache.matrix(test),
        torch.tensor([label[r.label] for r in test]),
        len(classes),
        cfg,
        seed=0,
    )
    with torch.no_grad():
        predicted = head(cache.matrix(test)).argmax(1).numpy()
    truth = np.array([label[r.label] for r in test])
    table[f"lora_images_at_{size}px"] = [
        float((predicted[truth == i] == i).mean()) for i in range(len(classes))
    ]
    table.loc["all classes"] = table.mean()
    return table


def nearest_lora_images(runner: CellRunner) -> pd.DataFrame:
    """Each generated image's nearest LoRA-training image of its class in the backbone's
    features (cosine distance), and, for reference, each real test image's. A generator
    that memorised its training images puts its images much nearer to them than new real
    images of the class are."""
    cache = runner.feature_cache
    lora = runner.manifest.split("lora")
    queries = {"generated": runner.generated(), "real test": runner.manifest.split("test")}
    cache.ensure(lora + [r for rs in queries.values() for r in rs], runner.features)

    def unit(records: list[ImageRecord]) -> torch.Tensor:
        return torch.nn.functional.normalize(cache.matrix(records), dim=1)

    rows = []
    for label in runner.classes:
        anchors = [r for r in lora if r.label == label]
        anchor_x = unit(anchors)
        for kind, records in queries.items():
            mine = [r for r in records if r.label == label]
            if not mine:
                continue
            distance = 1 - unit(mine) @ anchor_x.T
            best, index = distance.min(dim=1)
            rows += [
                {
                    "label": label,
                    "kind": kind,
                    "ref": r.ref,
                    "split": r.split,
                    "sha256": r.sha256,
                    "nearest_lora_ref": anchors[i].ref,
                    "distance": float(d),
                }
                for r, d, i in zip(mine, best, index.tolist(), strict=True)
            ]
    return pd.DataFrame(rows)


def memorisation_summary(nearest: pd.DataFrame) -> pd.DataFrame:
    """Per class: median distance to the nearest LoRA-training image, generated vs real."""
    table = nearest.pivot_table(index="label", columns="kind", values="distance", aggfunc="median")
    table.loc["all classes"] = nearest.groupby("kind")["distance"].median()
    return table


def frechet_samples(
    pool: list[ImageRecord], generated: list[ImageRecord]
) -> dict[str, tuple[list[ImageRecord], list[ImageRecord]]]:
    """Per class, (real, generated) of equal size: every generated image of the class and a
    seeded sample of as many pool images (or all of them, and as many generated, if the
    pool is smaller). Fréchet distances are biased by the sample size; equal counts keep
    the classes comparable."""
    real_by, fake_by = defaultdict(list), defaultdict(list)
    for record in pool:
        real_by[record.label].append(record)
    for record in generated:
        fake_by[record.label].append(record)
    pairs = {}
    for label in sorted(fake_by):
        real = sorted(real_by[label], key=lambda r: r.ref)
        fake = sorted(fake_by[label], key=lambda r: r.ref)
        n = min(len(real), len(fake))
        pairs[label] = (random.Random(f"frechet/{label}").sample(real, n), fake[:n])
    return pairs


def _interval(row, name: str) -> tuple[float, float, float]:
    """A table row's `name` and its 95% CI bounds (the columns `_interval_columns` made)."""
    return getattr(row, name), getattr(row, f"{name}_ci_low"), getattr(row, f"{name}_ci_high")


def _compare(interval: tuple[float, float, float], base: tuple[float, float, float]) -> str:
    """How an interval stands against a baseline's: above, below, or overlapping it."""
    (_, low, high), (_, base_low, base_high) = interval, base
    if np.isnan([low, high, base_low, base_high]).any():
        return "cannot be told apart (fewer than two seeds)"
    if low > base_high:
        return "is better than"
    if high < base_low:
        return "is worse than"
    return "is within the 95% CI of"


def conclusion(t2: pd.DataFrame, base: pd.DataFrame) -> str:
    """A short paragraph whose every number and verdict comes from the tables."""
    if t2.empty:
        return "No mix has finished yet."
    lines = []
    verdicts = []
    for row in t2.itertuples():
        if "real_only_accuracy" not in t2.columns or np.isnan(row.real_only_accuracy):
            continue
        mix, alone = _interval(row, "accuracy"), _interval(row, "real_only_accuracy")
        verdict = _compare(mix, alone)
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


def interval_text(mean: float, low: float, high: float) -> str:
    """`0.791 [0.695, 0.887]`; the mean alone when the interval is undefined (one seed)."""
    if np.isnan([low, high]).any():
        return f"{mean:.3f}"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


VERDICT = {
    "is better than": "better",
    "is worse than": "worse",
    "is within the 95% CI of": "within the CI",
    "cannot be told apart (fewer than two seeds)": "one seed only",
}


def table2_report(t2: pd.DataFrame) -> pd.DataFrame:
    """Table 2 as a reader compares it with the paper: per mix, accuracy with its 95% CI,
    real-only with the same real images, the verdict, and the paper's values."""
    rows = []
    for row in t2.itertuples():
        has_same = "real_only_accuracy" in t2.columns and not np.isnan(row.real_only_accuracy)
        mix = _interval(row, "accuracy")
        same = _interval(row, "real_only_accuracy") if has_same else None
        rows.append(
            {
                "generated : real": f"{row.n_generated} : {row.n_real}",
                "generated share": f"{row.share:.0%}",
                "seeds": row.seeds,
                "accuracy [95% CI]": interval_text(*mix),
                "real only, same real images": interval_text(*same) if same else "not run",
                "mix vs real only": VERDICT[_compare(mix, same)] if same else "",
                "paper accuracy": ""
                if np.isnan(row.paper_accuracy)
                else f"{row.paper_accuracy:.3f}",
                "mse [95% CI]": interval_text(*_interval(row, "mse")),
                'paper "mse"': "" if np.isnan(row.paper_mse) else f"{row.paper_mse:.3f}",
            }
        )
    return pd.DataFrame(rows).set_index("generated : real") if rows else pd.DataFrame()


def baselines_report(base: pd.DataFrame) -> pd.DataFrame:
    """The baselines with their accuracy written as `mean [low, high]`."""
    if base.empty:
        return base
    rows = [
        {
            "baseline": row.baseline,
            "generated : real": f"{row.n_generated} : {row.n_real}",
            "seeds": row.seeds,
            "accuracy [95% CI]": interval_text(*_interval(row, "accuracy")),
        }
        for row in base.itertuples()
    ]
    return pd.DataFrame(rows).set_index("baseline")


def headline(cfg: StudyConfig) -> list[str]:
    """The study's answer in a few lines, from the finished cells alone (no model loaded)."""
    runner = CellRunner(cfg)
    cells = collect(runner)
    return answer(table2(cfg, cells), baselines(cfg, cells), len(runner.classes))


def answer(t2: pd.DataFrame, base: pd.DataFrame, n_classes: int) -> list[str]:
    """The best mix against real-only with its real images, and CAS against chance."""
    lines = []
    if not t2.empty:
        best = t2.loc[t2["accuracy"].idxmax()]
        mix = _interval(best, "accuracy")
        line = (
            f"best mix, {int(best.n_generated)} generated + {int(best.n_real)} real: accuracy "
            + interval_text(*mix)
        )
        if not np.isnan(best.get("real_only_accuracy", np.nan)):
            same = _interval(best, "real_only_accuracy")
            line += (
                f"; it {_compare(mix, same)} its {int(best.n_real)} real images alone "
                f"({interval_text(*same)})"
            )
        lines.append(line)
    rows = base.set_index("baseline") if not base.empty else base
    if "generated only (CAS)" in rows.index:
        cas = rows.loc["generated only (CAS)"]
        line = (
            f"generated only (CAS), {int(cas.n_generated)} images: "
            + interval_text(*_interval(cas, "accuracy"))
            + f" (chance {1 / n_classes:.3f})"
        )
        if "real only, same count as CAS" in rows.index:
            real = rows.loc["real only, same count as CAS"]
            line += "; real only, as many images: " + interval_text(*_interval(real, "accuracy"))
        lines.append(line)
    return lines


def analyze(cfg: StudyConfig) -> Analysis:
    """Notebook 04's one call."""

    runner = CellRunner(cfg)  # one backbone and one feature cache for every table below
    cells = collect(runner)
    t2 = table2(cfg, cells)
    base = baselines(cfg, cells)
    fit, fit_text = paper_mse_fit()
    return Analysis(
        table1=table1(cfg),
        table2=t2,
        baselines=base,
        curves=curves(cells),
        per_class=per_class(cells),
        quality=quality(runner, cells),
        ceilings=ceilings(runner, cells),
        nearest=nearest_lora_images(runner)
        if cfg.paths.generated_manifest.exists()
        else pd.DataFrame(),
        mse_readings=mse_readings(cfg, cells),
        paper_mse_fit=fit,
        paper_mse_text=fit_text,
        conclusion=conclusion(t2, base),
        answer=answer(t2, base, len(runner.classes)),
    )
