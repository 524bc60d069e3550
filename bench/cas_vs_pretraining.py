"""CAS of the CPU profile's generator against the minutes spent pretraining its base.

    python bench/cas_vs_pretraining.py --steps 1500,3500 [--profile params/ucmerced-cpu.yaml]

For each number of transformer pretraining steps: pretrain the base (or reuse it from
the model cache), train the study's LoRA, generate the synthetic set, and train the
generated-only classifier (CAS) for the profile's seeds, each in its own run folder under
`--out`. Prints and writes `bench/results/cas_vs_pretraining.json`, so the trade-off
between pretraining time and class information is chosen on numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from synthaug.classify import train_cell  # noqa: E402
from synthaug.config import load_config  # noqa: E402
from synthaug.generate import generate_images  # noqa: E402
from synthaug.io import read_json  # noqa: E402
from synthaug.lora import base_model_source, train_lora  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def measure(profile: str, steps: int, out: Path) -> dict:
    """One point of the curve: pretraining minutes and CAS (mean and per seed)."""
    cfg = load_config(
        profile,
        {
            "generator.pretrain.transformer_steps": steps,
            "output_dir": str(out),
            "name": f"pretrain-{steps}",
        },
    )
    pretraining = read_json(Path(base_model_source(cfg)) / "pretraining.json")
    start = time.perf_counter()
    train_lora(cfg)
    generate_images(cfg)
    cells = [train_cell(cfg, cfg.study.generated_only_count, 0, s) for s in cfg.study.seeds]
    accuracies = [cell["accuracy"] for cell in cells]
    return {
        "transformer_steps": steps,
        "pretraining_min": pretraining["seconds"] / 60,
        "transformer_loss_last_100": float(np.mean(pretraining["transformer_losses"][-100:])),
        "cas": float(np.mean(accuracies)),
        "cas_per_seed": accuracies,
        "chance": 1 / len(cells[0]["classes"]),
        "lora_generate_cas_s": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=str(ROOT / "params" / "ucmerced-cpu.yaml"))
    parser.add_argument("--steps", default="1500,3500", help="transformer pretraining steps")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-cas"))
    args = parser.parse_args()
    points = [measure(args.profile, int(n), Path(args.out)) for n in args.steps.split(",")]
    result = {"profile": Path(args.profile).name, "points": points}
    print(json.dumps(result, indent=2))
    print(f"written to {save('cas_vs_pretraining', result)}")


if __name__ == "__main__":
    main()
