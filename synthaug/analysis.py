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

from synthaug import provenance
from synthaug.classify import CellRunner
from synthaug.config import StudyConfig, project_root
from synthaug.data import ImageRecord
from synthaug.design import by_pair, cell_arm, design_cells, runs_interval, study_cells
from synthaug.io import read_json
from synthaug.metrics import frechet_distance, prdc

PRDC_K = 5  # neighbours of precision/recall/density/coverage (Naeem et al.'s default)


@dataclass
class Analysis:
    table1: pd.DataFrame
    table2: pd.DataFrame
    baselines: pd.DataFrame
    curves: pd.DataFrame
    per_class: pd.DataFrame
    quality: pd.DataFrame
    arms: pd.DataFrame
    distribution: pd.DataFrame
    sample_efficiency: pd.DataFrame
    sample_efficiency_text: list[str]
    ceilings: pd.DataFrame
    nearest: pd.DataFrame
    mse_readings: pd.DataFrame
    paper_mse_fit: pd.DataFrame
    paper_mse_text: str
    conclusion: str
    answer: list[str]
    interval_note: str
    variance: pd.DataFrame


def collect(runner: CellRunner) -> list[dict]:
    """The metrics of every study cell that is done with the current settings."""
    cells = study_cells(runner.cfg, len(runner.classes))
    return [runner.metrics(c) for c in cells if runner.is_done(c)]


def paper_design(cfg: StudyConfig, cells: list[dict]) -> list[dict]:
    """The finished cells of the paper's design: the LoRA arm's mixes and the baselines
    (not the other arms, not the sample-efficiency sweep)."""
    wanted = {(c.n_generated, c.n_real, c.arm) for c in design_cells(cfg)}
    return [
        m for m in cells if (m["cell"]["n_generated"], m["cell"]["n_real"], cell_arm(m)) in wanted
    ]


def models_used(cfg: StudyConfig) -> str:
    """One paragraph naming the generator family and base, and the classifier backbone in
    whose features the quality metrics are measured."""
    from synthaug.families import family_named
    from synthaug.models import backbone_kind

    family = family_named(cfg.generator.family)
    backbone = cfg.classifier.model
    return (
        f"Generator: {family.title} (`{family.pipeline_class}`), base `{cfg.generator.base_model}`"
        f", one LoRA for all classes. Classifier: `{backbone}` ({backbone_kind(backbone)}, "
        f"{cfg.classifier.mode.replace('_', ' ')}); the Fréchet distance, precision, recall, "
        "density, coverage and nearest-neighbour distances are measured in its features."
    )


def table1(cfg: StudyConfig) -> pd.DataFrame:
    """The paper's Table 1: the LoRA's training settings, from the config actually used."""
    from synthaug.families import family_named
    from synthaug.models import base_name

    g = cfg.generator
    family = family_named(g.family)
    summary_path = cfg.first_generator().paths.lora_summary
    summary = read_json(summary_path) if summary_path.exists() else {}
    rows = {
        "generator family": f"{family.title} ({family.pipeline_class})",
        "base model": base_name(summary["base_model"]) if summary else g.base_model,
        "LoRA rank / alpha / dropout": f"{g.lora.rank} / {g.lora.alpha:g} / {g.lora.dropout:g}",
        "target modules": ", ".join(family.targets(g.lora.target_modules)),
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


def table2(cfg: StudyConfig, cells: list[dict]) -> pd.DataFrame:
    """Per mix: counts, mse and accuracy (mean, 95% CI over seeds), the same-count
    real-only accuracy, and the paper's values for the same generated share."""
    groups = by_pair(cells)
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
            **runs_interval(runs, "mse"),
            **runs_interval(runs, "accuracy"),
        }
        same = groups.get((0, mix.n_real), [])
        row.update(runs_interval(same, "accuracy", "real_only_accuracy") if same else {})
        row["paper_accuracy"] = paper["accuracy"].get(share, np.nan)
        row["paper_mse"] = paper["mse"].get(share, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def baselines(cfg: StudyConfig, cells: list[dict]) -> pd.DataFrame:
    """Real-only at the full mix size, generated-only (CAS) and real-only with as many
    images as CAS: mean and CI over seeds."""
    groups = by_pair(cells)
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
                    **runs_interval(groups[key], "accuracy"),
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
    for (n_generated, n_real), runs in sorted(by_pair(cells).items()):
        frame = pd.DataFrame([m["per_class_accuracy"] for m in runs])
        rows[f"gen {n_generated} : real {n_real}"] = frame.mean()
    return pd.DataFrame(rows).T


def quality(runner: CellRunner, cells: list[dict], arm: str = "lora") -> pd.DataFrame:
    """Per class, and over all classes, one arm's synthetic set against the real pool in
    the classifier's frozen-backbone features: CAS (test accuracy of the generated-only
    classifier, mean over seeds), the Fréchet distance, and precision, recall, density and
    coverage (`metrics.prdc`, k=5), on equal counts per class (a seeded sample of the pool
    the size of the class's generated images). Features come from the shared feature
    cache; those missing (every one, in `classifier.mode: full`) are computed first. The
    synthetic set is the first generator seed's (`StudyConfig.first_generator`)."""

    cfg = runner.cfg
    generated_only = by_pair(cells, arm).get((cfg.study.generated_only_count, 0), [])
    table = pd.DataFrame(index=[*runner.classes, "all classes"])
    table.index.name = "class"
    if generated_only:
        per_class = pd.DataFrame([m["per_class_accuracy"] for m in generated_only]).mean()
        table["cas"] = per_class
        table.loc["all classes", "cas"] = np.mean([m["accuracy"] for m in generated_only])
    shown = cfg.first_generator()
    if not shown.paths.arm_manifest(arm).exists():
        return table
    generated = runner.generated(arm, shown.generator_seed)
    pairs = frechet_samples(runner.manifest.split("pool"), generated)
    cache = runner.feature_cache
    cache.ensure([r for real, fake in pairs.values() for r in real + fake], runner.features)
    pairs["all classes"] = tuple(
        [r for side in sides for r in side] for sides in zip(*pairs.values(), strict=True)
    )
    for label, (real, fake) in pairs.items():
        real_x, fake_x = cache.matrix(real).numpy(), cache.matrix(fake).numpy()
        table.loc[label, "n_per_side"] = len(real)
        if min(len(real), len(fake)) > 1:
            table.loc[label, "frechet_distance"] = frechet_distance(real_x, fake_x)
        if min(len(real), len(fake)) > PRDC_K:
            for name, value in prdc(real_x, fake_x, PRDC_K).items():
                table.loc[label, name] = value
    return table


def arms(cfg: StudyConfig, cells: list[dict]) -> pd.DataFrame:
    """Each arm's mixes and CAS (accuracy, mean and 95% CI over seeds), long format: the
    control the paper lacks (`base`: the same prompts without the LoRA)."""
    rows = []
    for arm in cfg.generation.arms:
        groups = by_pair(cells, arm)
        for cell in design_cells(cfg, arm):
            runs = groups.get((cell.n_generated, cell.n_real), [])
            if cell.n_generated and runs:
                rows.append(
                    {
                        "arm": arm,
                        "n_generated": cell.n_generated,
                        "n_real": cell.n_real,
                        "share": round(cell.n_generated / (cell.n_generated + cell.n_real), 3),
                        "seeds": len(runs),
                        **runs_interval(runs, "accuracy"),
                    }
                )
    return pd.DataFrame(rows)


def arms_report(table: pd.DataFrame) -> pd.DataFrame:
    """The arms side by side: a row per training set, a column per arm, `mean [low, high]`."""
    if table.empty:
        return table
    text = table.assign(
        cell=[interval_text(*_interval(row, "accuracy")) for row in table.itertuples()],
        mix=[
            "generated only (CAS)" if not row.n_real else f"{row.n_generated} : {row.n_real}"
            for row in table.itertuples()
        ],
    )
    order = list(dict.fromkeys(text["mix"]))
    wide = text.pivot(index="mix", columns="arm", values="cell").reindex(order)
    wide.index.name = "generated : real"
    return wide[list(dict.fromkeys(table["arm"]))]


def arms_answer(table: pd.DataFrame) -> list[str]:
    """What the LoRA adds: each other arm's CAS against the LoRA arm's, and in how many
    mixes that arm's interval lies above, below or across the LoRA arm's."""
    if table.empty:
        return []
    lines = []
    by_arm = {arm: rows.set_index(["n_generated", "n_real"]) for arm, rows in table.groupby("arm")}
    lora = by_arm.pop("lora", None)
    if lora is None:
        return []
    for arm, rows in by_arm.items():
        shared = [key for key in rows.index if key in lora.index]
        verdicts = [
            VERDICT[
                _compare(_interval(lora.loc[k], "accuracy"), _interval(rows.loc[k], "accuracy"))
            ]
            for k in shared
        ]
        cas = [k for k in shared if k[1] == 0]
        line = f"the LoRA against the {arm} arm: "
        if cas:
            line += (
                "CAS "
                + interval_text(*_interval(lora.loc[cas[0]], "accuracy"))
                + " against "
                + interval_text(*_interval(rows.loc[cas[0]], "accuracy"))
                + "; "
            )
        counts = {v: verdicts.count(v) for v in dict.fromkeys(verdicts)}
        line += ", ".join(f"{v} in {n} of {len(verdicts)}" for v, n in counts.items())
        lines.append(line + " training sets")
    return lines


def _transformed_features(
    runner: CellRunner, records: list[ImageRecord], tag: str, transform
) -> list[ImageRecord]:
    """Cache the backbone's features of `records` after `transform` (a list of images to a
    list of images), keyed `<sha256>@<tag>`; return the records under those keys."""
    from dataclasses import replace

    keyed = [replace(r, sha256=f"{r.sha256}@{tag}") for r in records]
    original = {k.sha256: r for k, r in zip(keyed, records, strict=True)}

    def compute(batch: list[ImageRecord]):
        images = transform([runner.load(original[r.sha256]) for r in batch])
        return runner.backbone.features(images, runner.cfg.classifier.batch_size)

    runner.feature_cache.ensure(keyed, compute)
    return keyed


def _resize(size: int):
    from PIL import Image

    return lambda images: [i.resize((size, size), Image.Resampling.BICUBIC) for i in images]


def vae_roundtrip(cfg: StudyConfig):
    """Images to images through the base's own VAE at the generator's resolution (encode,
    take the posterior's mode, decode): the most any generator on that VAE can keep. The
    VAE is loaded on the first call only (not at all when the features are cached)."""
    import functools

    from PIL import Image

    from synthaug.families import family_named
    from synthaug.models import default_device
    from synthaug.pretrain import base_model_source

    @functools.cache
    def vae():
        model = family_named(cfg.generator.family).load_vae(base_model_source(cfg))
        return model.to(default_device()).eval()

    resize = _resize(cfg.generator.resolution)

    @torch.no_grad()
    def transform(images):
        arrays = np.stack([np.asarray(i.convert("RGB")) for i in resize(images)])
        x = torch.from_numpy(arrays).permute(0, 3, 1, 2).to(vae().device, vae().dtype)
        x = x / 127.5 - 1
        out = vae().decode(vae().encode(x).latent_dist.mode()).sample.float().clamp(-1, 1)
        pixels = ((out + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(a) for a in pixels]

    return transform


def _probe_per_class(runner: CellRunner, train: list[ImageRecord]) -> list[float]:
    """Per-class test accuracy of a linear probe (seed 0) trained on `train`'s features."""
    from synthaug.classify import train_linear_head

    cache, test = runner.feature_cache, runner.manifest.split("test")
    cache.ensure(test, runner.features)
    label = {name: i for i, name in enumerate(runner.classes)}
    head, _ = train_linear_head(
        cache.matrix(train),
        torch.tensor([label[r.label] for r in train]),
        cache.matrix(test),
        torch.tensor([label[r.label] for r in test]),
        len(runner.classes),
        runner.cfg,
        seed=0,
    )
    with torch.no_grad():
        predicted = head(cache.matrix(test)).argmax(1).numpy()
    truth = np.array([label[r.label] for r in test])
    return [float((predicted[truth == i] == i).mean()) for i in range(len(runner.classes))]


def ceilings(runner: CellRunner, cells: list[dict]) -> pd.DataFrame:
    """Per class, what CAS is measured against (all test accuracies, linear probe on the
    backbone's features): CAS itself; a generator that reproduced its LoRA-training images
    exactly, at its own resolution, and the same images through the base's VAE (a probe
    trained on those images, one seed); and real images of the same count as CAS."""
    from synthaug.models import base_name
    from synthaug.pretrain import base_model_source

    cfg = runner.cfg
    table = pd.DataFrame(index=runner.classes)
    table.index.name = "class"
    count = cfg.study.generated_only_count
    columns = {"cas": (count, 0, "lora"), "real_same_count": (0, count, "lora")}
    columns |= {f"cas_{arm}": (count, 0, arm) for arm in cfg.generation.arms[1:]}  # after lora
    for column, (n_generated, n_real, arm) in columns.items():
        runs = by_pair(cells, arm).get((n_generated, n_real))
        if runs:
            table[column] = pd.DataFrame([m["per_class_accuracy"] for m in runs]).mean()
    size = cfg.generator.resolution
    lora = runner.manifest.split("lora")
    resized = _transformed_features(runner, lora, f"{size}px", _resize(size))
    table[f"lora_images_at_{size}px"] = _probe_per_class(runner, resized)
    tag = f"{size}px-vae-{base_name(base_model_source(cfg))}"
    decoded = _transformed_features(runner, lora, tag, vae_roundtrip(cfg))
    table[f"lora_images_through_vae_at_{size}px"] = _probe_per_class(runner, decoded)
    table.loc["all classes"] = table.mean()
    return table


def nearest_lora_images(runner: CellRunner) -> pd.DataFrame:
    """Each generated image's nearest LoRA-training image of its class in the backbone's
    features (cosine distance), and, for reference, each real test image's. A generator
    that memorised its training images puts its images much nearer to them than new real
    images of the class are."""
    cache = runner.feature_cache
    lora = runner.manifest.split("lora")
    generated = runner.generated("lora", runner.cfg.first_generator().generator_seed)
    queries = {"generated": generated, "real test": runner.manifest.split("test")}
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
    """A table row's `name` and its 95% CI bounds (the columns `design.runs_interval` made)."""
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


def variance(t2: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """Per mix and CAS: how many generator and classifier seeds ran, and which share of
    the accuracy's variance lies between generator seeds (the rest: classifier draws)."""
    rows = [
        (f"{row.n_generated} : {row.n_real}", row)
        for table in (t2, base)
        if not table.empty
        for row in table.itertuples()
        if row.n_generated
    ]
    return pd.DataFrame(
        [
            {
                "generated : real": name,
                "generator seeds": _generator_seeds(row),
                "classifier seeds": int(row.seeds) // _generator_seeds(row),
                "variance between generator seeds": row.accuracy_generator_share,
                "variance between classifier seeds": 1 - row.accuracy_generator_share,
            }
            for name, row in rows
        ]
    )


def _generator_seeds(row) -> int:
    """How many generator seeds a table row's accuracy interval covers (1: none to cover)."""
    return int(getattr(row, "accuracy_generator_seeds", 1))


def covers(row) -> str:
    """` (95% CI over 3 generator seeds)` where a row's interval includes the generator."""
    generators = _generator_seeds(row)
    return f" (95% CI over {generators} generator seeds)" if generators > 1 else ""


def seeds_text(row) -> str:
    """`3 x 3` (generator x classifier seeds) for a row with generated images, else `3`."""
    generators, seeds = _generator_seeds(row), int(row.seeds)
    return f"{generators} x {seeds // generators}" if generators > 1 else f"{seeds}"


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
                "seeds": seeds_text(row),
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
            "seeds": seeds_text(row),
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
            + covers(best)
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
            + covers(cas)
            + f" (chance {1 / n_classes:.3f})"
        )
        if "real only, same count as CAS" in rows.index:
            real = rows.loc["real only, same count as CAS"]
            line += "; real only, as many images: " + interval_text(*_interval(real, "accuracy"))
        lines.append(line)
    return lines


def analyze(cfg: StudyConfig) -> Analysis:
    """Notebook 04's one call."""
    from synthaug.efficiency import efficiency_text, sample_efficiency

    provenance.record(cfg, "04_analysis")
    runner = CellRunner(cfg)  # one backbone and one feature cache for every table below
    cells = collect(runner)
    paper = paper_design(cfg, cells)
    t2 = table2(cfg, cells)
    base = baselines(cfg, cells)
    fit, fit_text = paper_mse_fit()
    distribution = pd.concat(
        {arm: quality(runner, cells, arm) for arm in cfg.generation.arms}, names=["arm"]
    )
    efficiency = sample_efficiency(cfg, cells, len(runner.classes))
    arm_table = arms(cfg, cells)
    return Analysis(
        table1=table1(cfg),
        table2=t2,
        baselines=base,
        curves=curves(paper),
        per_class=per_class(paper),
        quality=distribution.loc["lora"],
        arms=arm_table,
        distribution=distribution,
        sample_efficiency=efficiency,
        sample_efficiency_text=efficiency_text(efficiency),
        ceilings=ceilings(runner, cells),
        nearest=nearest_lora_images(runner)
        if cfg.first_generator().paths.generated_manifest.exists()
        else pd.DataFrame(),
        mse_readings=mse_readings(cfg, paper),
        paper_mse_fit=fit,
        paper_mse_text=fit_text,
        conclusion=conclusion(t2, base),
        answer=answer(t2, base, len(runner.classes)) + arms_answer(arm_table),
        interval_note=interval_note(cfg),
        variance=variance(t2, base),
    )
