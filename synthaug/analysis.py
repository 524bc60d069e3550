"""Stage 4: the study's tables and numbers, computed from the cells' metrics.json files.

Table 1 (the LoRA settings actually used), Table 2 (per mix: counts, mse and accuracy,
mean and 95% CI over seeds, beside the paper's own values and the same-count real-only
baseline), per-epoch curves (Figures 2-4), per-class accuracy, the synthetic set's
quality per class (Classification Accuracy Score and Fréchet distance in the classifier
backbone's feature space), and a written conclusion computed from these numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import yaml

from synthaug.classify import CellRunner, cells_dir, study_cells
from synthaug.config import StudyConfig, project_root
from synthaug.metrics import frechet_distance, mean_ci


@dataclass
class Analysis:
    table1: pd.DataFrame
    table2: pd.DataFrame
    baselines: pd.DataFrame
    curves: pd.DataFrame
    per_class: pd.DataFrame
    quality: pd.DataFrame
    conclusion: str


def collect(cfg: StudyConfig) -> list[dict]:
    """The metrics of every study cell that is done with the current settings."""
    runner = CellRunner(cfg)
    cells = [c for c in study_cells(cfg.study) if runner.is_done(c)]
    return [json.loads((cells_dir(cfg) / c.name / "metrics.json").read_text()) for c in cells]


def table1(cfg: StudyConfig) -> pd.DataFrame:
    """The paper's Table 1: the LoRA's training settings, from the config actually used."""
    from synthaug.lora import lora_dir

    g = cfg.generator
    summary_path = lora_dir(cfg) / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    rows = {
        "base model": g.base_model
        if g.base_model != "tiny"
        else "tiny FLUX-architecture pipeline" + (" pretrained on AID" if g.pretrain else ""),
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
        "prompt": cfg.generation.prompt_template,
    }
    return pd.DataFrame({"value": [str(v) for v in rows.values()]}, index=list(rows))


def paper_table() -> pd.DataFrame:
    """The paper's own Table 2 (`params/paper_table2.yaml`); nulls stay blank."""
    data = yaml.safe_load((project_root() / "params" / "paper_table2.yaml").read_text())
    table = pd.DataFrame(data["rows"])
    table["share"] = (table["n_generated"] / (table["n_generated"] + table["n_real"])).round(3)
    return table


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
    """Real-only at the full mix size and generated-only (CAS), mean and CI over seeds."""
    groups = _by_pair(cells)
    total = max(m.n_generated + m.n_real for m in cfg.study.resolved_mixes())
    rows = []
    for label, key in (("real only, full size", (0, total)), ("generated only (CAS)", (total, 0))):
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


def quality(cfg: StudyConfig, cells: list[dict]) -> pd.DataFrame:
    """Per class: CAS (test accuracy of the generated-only classifier, mean over seeds) and
    the Fréchet distance between real-pool and generated features of the classifier's
    frozen backbone (the linear-probe feature cache)."""
    from synthaug.classify import FeatureCache, feature_cache_path
    from synthaug.data import generated_dir, prepare_data, read_generated_manifest

    total = max(m.n_generated + m.n_real for m in cfg.study.resolved_mixes())
    generated_only = _by_pair(cells).get((total, 0), [])
    manifest = prepare_data(cfg)
    table = pd.DataFrame(index=manifest.classes)
    table.index.name = "class"
    if generated_only:
        table["cas"] = pd.DataFrame([m["per_class_accuracy"] for m in generated_only]).mean()
    cache_path = feature_cache_path(cfg)
    gen_manifest = generated_dir(cfg) / "manifest.csv"
    if cache_path.exists() and gen_manifest.exists():
        cache = FeatureCache(cache_path)
        real = [r for r in manifest.split("pool") if r.sha256 in cache.rows]
        fake = [r for r in read_generated_manifest(gen_manifest) if r.sha256 in cache.rows]
        for label in manifest.classes:
            a = [r for r in real if r.label == label]
            b = [r for r in fake if r.label == label]
            if len(a) > 1 and len(b) > 1:
                table.loc[label, "frechet_distance"] = frechet_distance(
                    cache.matrix(a).numpy(), cache.matrix(b).numpy()
                )
                table.loc[label, "n_real_features"] = len(a)
                table.loc[label, "n_generated_features"] = len(b)
    return table


def _compare(low: float, high: float, base_low: float, base_high: float) -> str:
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
        verdict = _compare(
            row.accuracy_ci_low,
            row.accuracy_ci_high,
            row.real_only_accuracy_ci_low,
            row.real_only_accuracy_ci_high,
        )
        verdicts.append(verdict)
        lines.append(
            f"- {row.n_generated} generated + {row.n_real} real: accuracy "
            f"{row.accuracy:.3f} [{row.accuracy_ci_low:.3f}, {row.accuracy_ci_high:.3f}]"
            f" {verdict} real-only with the same {row.n_real} real images "
            f"({row.real_only_accuracy:.3f} [{row.real_only_accuracy_ci_low:.3f}, "
            f"{row.real_only_accuracy_ci_high:.3f}])."
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


def analyze(cfg: StudyConfig) -> Analysis:
    """Notebook 04's one call."""
    cells = collect(cfg)
    t2 = table2(cfg, cells)
    base = baselines(cfg, cells)
    return Analysis(
        table1=table1(cfg),
        table2=t2,
        baselines=base,
        curves=curves(cells),
        per_class=per_class(cells),
        quality=quality(cfg, cells),
        conclusion=conclusion(t2, base),
    )
