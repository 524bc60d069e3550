"""How far the CPU study's answer moves with the generator's own randomness.

    python bench/generator_seeds.py [--bases 0,1] [--generator-seeds 0,1,2] [--out DIR]
                                    [--results NAME]

For each base (a pretraining seed, `generator.pretrain.seed`) and each generator seed
(`study.generator_seeds`: the LoRA's initialisation, noise and order, and its images'
seeds), train the profile's LoRA, generate its synthetic set, and fit the classifier for
every classifier seed on the generated-only set (CAS) and on the 210 generated : 840 real
mix; the real-only baseline with the same 840 real images once per classifier seed. Each
base has its own run folder under `--out`. Prints and writes
`bench/results/generator_seeds.json`: every accuracy, and per base and over both the mean,
the spread between generator seeds and the share of variance they carry.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from synthaug.classify import run_cell  # noqa: E402
from synthaug.config import load_config  # noqa: E402
from synthaug.generate import generate_images  # noqa: E402
from synthaug.lora import train_lora  # noqa: E402
from synthaug.metrics import nested_interval_columns  # noqa: E402
from synthaug.pretrain import base_model_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MIX = (210, 840)  # generated : real, the profile's 20% mix


def one_base(profile: str, out: str, base_seed: int, generator_seeds: list[int]) -> dict:
    """Accuracies of CAS, the mix and real-only per (generator seed, classifier seed)."""
    cfg = load_config(
        profile,
        {
            "output_dir": out,
            "name": f"base{base_seed}",
            "generator.pretrain.seed": base_seed,
            "study.generator_seeds": generator_seeds,
            "generation.arms": ["lora"],
            "study.sample_efficiency": None,
        },
    )
    start = time.perf_counter()
    base_model_source(cfg)
    minutes = {"pretraining (0 if cached)": (time.perf_counter() - start) / 60}
    cas_count = cfg.study.generated_only_count
    result: dict = {"cas": {}, "mix": {}, "minutes": minutes}
    for g in generator_seeds:
        seeded = cfg.at_generator_seed(g)
        start = time.perf_counter()
        train_lora(seeded)
        generate_images(seeded)
        minutes[f"generator seed {g}: LoRA + generation"] = (time.perf_counter() - start) / 60
        result["cas"][g] = [run_cell(seeded, cas_count, 0, s)["accuracy"] for s in cfg.study.seeds]
        result["mix"][g] = [run_cell(seeded, *MIX, s)["accuracy"] for s in cfg.study.seeds]
        print(f"base {base_seed}, g {g}: CAS {result['cas'][g]}, mix {result['mix'][g]}")
    result["real_only"] = [run_cell(cfg, 0, MIX[1], s)["accuracy"] for s in cfg.study.seeds]
    for name in ("cas", "mix"):
        result[f"{name}_summary"] = summary(result[name])
    return result


def summary(groups: dict[int, list[float]]) -> dict:
    """Mean, 95% CI over generator seeds, their spread, and the generator's variance share."""
    means = [float(np.mean(v)) for v in groups.values()]
    return {
        **nested_interval_columns(groups, "accuracy"),
        "per_generator_seed": means,
        "range_over_generator_seeds": [min(means), max(means)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=str(ROOT / "params" / "ucmerced-cpu.yaml"))
    parser.add_argument("--bases", default="0,1")
    parser.add_argument("--generator-seeds", default="0,1,2")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-generator-seeds"))
    parser.add_argument("--results", default="generator_seeds", help="bench/results/NAME.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.generator_seeds.split(",")]
    bases = {b: one_base(args.profile, args.out, int(b), seeds) for b in args.bases.split(",")}
    overall = {}
    for name in ("cas", "mix"):
        groups = {
            f"{b}/{g}": values for b, result in bases.items() for g, values in result[name].items()
        }
        means = [float(np.mean(v)) for v in groups.values()]
        overall[name] = {"mean": float(np.mean(means)), "range": [min(means), max(means)]}
        print(f"{name}: every (base, generator seed) mean {overall[name]}")
    print(save(args.results, {"profile": args.profile, "bases": bases, "overall": overall}))


if __name__ == "__main__":
    main()
