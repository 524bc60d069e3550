"""The study's tables from its finished cells (`metrics.json`): the paper's Tables 1 and 2
beside this study's, the baselines, the arms, per-epoch curves, per-class accuracy and
where the variance lies; and each as the report prints it (`mean [low, high]`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml

from synthaug.analysis.intervals import (
    VERDICT,
    compare,
    generator_seeds,
    interval,
    interval_text,
    seeds_text,
)
from synthaug.config import StudyConfig
from synthaug.design import by_pair, cell_arm, design_cells, runs_interval
from synthaug.families import family_named
from synthaug.io import read_json
from synthaug.models import base_name
from synthaug.paths import project_root


def paper_design(cfg: StudyConfig, cells: list[dict]) -> list[dict]:
    """The finished cells of the paper's design: the LoRA arm's mixes and the baselines
    (not the other arms, not the sample-efficiency sweep)."""
    wanted = {(c.n_generated, c.n_real, c.arm) for c in design_cells(cfg)}
    return [
        m for m in cells if (m["cell"]["n_generated"], m["cell"]["n_real"], cell_arm(m)) in wanted
    ]


def paper_results() -> dict:
    """The paper's own Tables 1 and 2 (`params/paper_table2.yaml`)."""
    return yaml.safe_load((project_root() / "params" / "paper_table2.yaml").read_text())


def paper_table() -> pd.DataFrame:
    """The paper's own Table 2; nulls stay blank."""
    table = pd.DataFrame(paper_results()["rows"])
    table["share"] = (table["n_generated"] / (table["n_generated"] + table["n_real"])).round(3)
    return table


def table1(cfg: StudyConfig) -> pd.DataFrame:
    """The paper's Table 1: the LoRA's training settings, from the config actually used."""

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
                "generator seeds": generator_seeds(row),
                "classifier seeds": int(row.seeds) // generator_seeds(row),
                "variance between generator seeds": row.accuracy_generator_share,
                "variance between classifier seeds": 1 - row.accuracy_generator_share,
            }
            for name, row in rows
        ]
    )


def table2_report(t2: pd.DataFrame) -> pd.DataFrame:
    """Table 2 as a reader compares it with the paper: per mix, accuracy with its 95% CI,
    real-only with the same real images, the verdict, and the paper's values."""
    rows = []
    for row in t2.itertuples():
        has_same = "real_only_accuracy" in t2.columns and not np.isnan(row.real_only_accuracy)
        mix = interval(row, "accuracy")
        same = interval(row, "real_only_accuracy") if has_same else None
        rows.append(
            {
                "generated : real": f"{row.n_generated} : {row.n_real}",
                "generated share": f"{row.share:.0%}",
                "seeds": seeds_text(row),
                "accuracy [95% CI]": interval_text(*mix),
                "real only, same real images": interval_text(*same) if same else "not run",
                "mix vs real only": VERDICT[compare(mix, same)] if same else "",
                "paper accuracy": ""
                if np.isnan(row.paper_accuracy)
                else f"{row.paper_accuracy:.3f}",
                "mse [95% CI]": interval_text(*interval(row, "mse")),
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
            "accuracy [95% CI]": interval_text(*interval(row, "accuracy")),
        }
        for row in base.itertuples()
    ]
    return pd.DataFrame(rows).set_index("baseline")


def arms_report(table: pd.DataFrame) -> pd.DataFrame:
    """The arms side by side: a row per training set, a column per arm, `mean [low, high]`."""
    if table.empty:
        return table
    text = table.assign(
        cell=[interval_text(*interval(row, "accuracy")) for row in table.itertuples()],
        mix=[
            "generated only (CAS)" if not row.n_real else f"{row.n_generated} : {row.n_real}"
            for row in table.itertuples()
        ],
    )
    order = list(dict.fromkeys(text["mix"]))
    wide = text.pivot(index="mix", columns="arm", values="cell").reindex(order)
    wide.index.name = "generated : real"
    return wide[list(dict.fromkeys(table["arm"]))]
