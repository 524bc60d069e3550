"""Speed-up of two processes over one for each stage of the CPU study, on this machine.

    python bench/processes.py [--profile params/ucmerced-cpu.yaml]

For each stage, the same work twice, in fresh run folders: once in one process (all
cores), once spread over two (`study.devices: 2` for the LoRA's data-parallel processes
and the generation shards, `study.workers: 2` for the classifier kernels, one core each).
The work is cut to minutes: 1 LoRA epoch, 210 generated images, the 12 classifier cells
of one mix (20% generated) and its baselines, 3 seeds. The base model comes from the
model cache (pretrained first, untimed); each run computes its own backbone features.
Writes `bench/results/processes.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from synthaug.config import load_config  # noqa: E402
from synthaug.machinery.study import run_study  # noqa: E402
from synthaug.pretrain import base_model_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "generator.epochs": 1,
    "generation.count": 210,
    "study.generated_shares": "[0.2]",
}


def timed_stage(profile: str, out: Path, stage: str, overrides: dict) -> float:
    """Seconds `synthaug run` takes for `stage`, the stages before it already done."""
    settings = {**SMALL, "output_dir": str(out), **overrides}
    previous = {"generate": "lora", "classify": "generate"}.get(stage)
    if previous:
        run_study(profile, settings, stage=previous, echo=lambda _line: None)
    start = time.perf_counter()
    run_study(profile, settings, stage=stage, echo=lambda _line: None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=str(ROOT / "params" / "ucmerced-cpu.yaml"))
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-processes"))
    args = parser.parse_args()
    base_model_source(load_config(args.profile))  # pretrained once, outside the timings
    two = {
        "lora": {"study.devices": 2},
        "generate": {"study.devices": 2},
        "classify": {"study.workers": 2},
    }
    one = {"lora": {}, "generate": {}, "classify": {"study.workers": 1}}
    stages = {}
    for stage in ("lora", "generate", "classify"):
        seconds = {
            label: timed_stage(args.profile, Path(args.out) / f"{stage}-{label}", stage, s[stage])
            for label, s in (("one", one), ("two", two))
        }
        stages[stage] = {**seconds, "speedup": seconds["one"] / seconds["two"]}
        print(stage, json.dumps(stages[stage]), flush=True)
    result = {"profile": Path(args.profile).name, "work": SMALL, "stages": stages}
    print(json.dumps(result, indent=2))
    print(f"written to {save('processes', result)}")


if __name__ == "__main__":
    main()
