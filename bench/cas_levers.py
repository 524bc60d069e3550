"""CAS of the CPU profile's generator under one change at a time (the levers of #13).

    python bench/cas_levers.py [--only NAME,...] [--results NAME] [--profile ...]

Each lever is a set of config overrides on the profile (for pretraining steps, see
`bench/cas_vs_pretraining.py`, which measures the same way). For each: reuse or pretrain the
base (cached by its own settings), train the LoRA, generate the synthetic set and train the
generated-only classifier (CAS) for the profile's seeds, in its own run folder under
`--out`. Prints and writes `bench/results/cas_levers.json`, with the per-class CAS, the
classifier's accuracy on its own generated training images (can it tell the generated
classes apart at all?), the ceilings CAS is measured against (`analysis.quality.ceilings`: the
LoRA images at the generator's resolution, and through the base's VAE) and the minutes
each part took. A lever that changes only `generation.*` settings reuses the LoRA the
`profile` lever trained (its folder under `--out`), so it costs a generation and CAS.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from synthaug.analysis.quality import ceilings  # noqa: E402
from synthaug.classify import CellRunner, run_cell  # noqa: E402
from synthaug.config import load_config  # noqa: E402
from synthaug.families.flux1 import TARGETS  # noqa: E402  the paper's LoRA targets
from synthaug.generate import generate_images  # noqa: E402
from synthaug.io import read_json  # noqa: E402
from synthaug.lora import train_lora  # noqa: E402
from synthaug.pretrain import base_model_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The LoRA as the paper trains it (its targets, 6 epochs), then one change at a time, then
# the profile (AdaLN targets; 18 epochs when `profile` was measured, 9 since issue 40).
PAPER_LORA = {"generator.epochs": 6, "generator.lora.target_modules": TARGETS}
ADALN = [*TARGETS, "norm1.linear", "norm1_context.linear", "norm.linear"]
LEVERS: dict[str, dict] = {
    "paper_lora": PAPER_LORA,
    "true_cfg_6": {**PAPER_LORA, "generation.true_cfg_scale": 6.0},
    "rank_32": {**PAPER_LORA, "generator.lora.rank": 32, "generator.lora.alpha": 32},
    "adaln_targets": {**PAPER_LORA, "generator.lora.target_modules": ADALN},
    "epochs_18": {**PAPER_LORA, "generator.epochs": 18},
    "profile": {},
    "profile_epochs_9": {"generator.epochs": 9},  # what moved the profile from 18 to 9 epochs
    # the profile's LoRA, generated otherwise
    "true_cfg_1_5": {"generation.true_cfg_scale": 1.5},
    "true_cfg_3": {"generation.true_cfg_scale": 3.0},
    "true_cfg_6_profile_lora": {"generation.true_cfg_scale": 6.0},
    "steps_24": {"generation.steps": 24},
    "lora_scale_1_5": {"generation.lora_scale": 1.5},
}


def measure(profile: str, name: str, overrides: dict, out: Path) -> dict:
    """CAS (mean, per seed, per class) of the generator with `overrides`, and its costs."""
    cfg = load_config(profile, {**overrides, "output_dir": str(out), "name": name})
    trained = out / "profile"
    if all(key.startswith("generation.") for key in overrides) and trained.exists():
        for part in ("data", "lora"):  # the same LoRA: copy it, do not train it again
            if not (cfg.run_dir / part).exists():
                shutil.copytree(trained / part, cfg.run_dir / part)
    start = time.perf_counter()
    pretraining = read_json(Path(base_model_source(cfg)) / "pretraining.json")
    lora_start = time.perf_counter()
    train_lora(cfg)
    generate_start = time.perf_counter()
    generate_images(cfg)
    cas_start = time.perf_counter()
    cells = [run_cell(cfg, cfg.study.generated_only_count, 0, s) for s in cfg.study.seeds]
    accuracies = [cell["accuracy"] for cell in cells]
    per_class = {
        c: float(np.mean([m["per_class_accuracy"][c] for m in cells])) for c in cells[0]["classes"]
    }
    ceiling = ceilings(CellRunner(cfg), cells).loc["all classes"]
    return {
        "lever": name,
        "overrides": overrides,
        "cas": float(np.mean(accuracies)),
        "cas_per_seed": accuracies,
        "cas_per_class": per_class,
        "chance": 1 / len(cells[0]["classes"]),
        "train_accuracy_on_generated": float(
            np.mean([m["history"][-1]["train_accuracy"] for m in cells])
        ),
        "ceilings": {k: float(v) for k, v in ceiling.items()},
        "base": Path(base_model_source(cfg)).name,
        "pretraining_min": pretraining["seconds"] / 60,
        "base_ready_min": (lora_start - start) / 60,
        "lora_min": (generate_start - lora_start) / 60,
        "generate_min": (cas_start - generate_start) / 60,
        "cas_min": (time.perf_counter() - cas_start) / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=str(ROOT / "params" / "ucmerced-cpu.yaml"))
    parser.add_argument("--only", default=",".join(LEVERS), help="levers to measure")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-cas-levers"))
    parser.add_argument("--results", default="cas_levers", help="bench/results/<NAME>.json")
    args = parser.parse_args()
    points = [
        measure(args.profile, name, LEVERS[name], Path(args.out)) for name in args.only.split(",")
    ]
    result = {"profile": Path(args.profile).name, "points": points}
    print(json.dumps(result, indent=2))
    print(f"written to {save(args.results, result)}")


if __name__ == "__main__":
    main()
