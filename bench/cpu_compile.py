"""Does regional compilation pay on a CPU? The CPU profile's LoRA and generation stages,
eager and compiled, each in a fresh run folder on this machine.

    python bench/cpu_compile.py [--profile params/ucmerced-cpu.yaml]

The work is cut to minutes as in `bench/processes.py` (1 LoRA epoch, 210 generated
images); the base comes from the model cache (pretrained first, untimed). A stage's time
includes its compilation, as a study's would: every task compiles in its own kernel.
Writes `bench/results/cpu_compile.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import processes  # noqa: E402
from common import save  # noqa: E402

from synthaug.config import load_config  # noqa: E402
from synthaug.machinery.study import run_study  # noqa: E402
from synthaug.pretrain import base_model_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# processes.py's cut of the work, with the LoRA arm alone and no sweep
SMALL = {**processes.SMALL, "generation.arms": "[lora]", "study.sample_efficiency": "null"}


def stage_seconds(profile: str, mode: str) -> dict[str, float]:
    """Seconds of `synthaug run --stage lora`, then of the generate stage, with `mode`."""
    out = Path(tempfile.mkdtemp(prefix=f"cpu-compile-{mode}-"))
    settings = {
        **SMALL,
        "output_dir": str(out),
        "generator.compile": mode,
        "generation.compile": mode,
    }
    seconds = {}
    for stage in ("lora", "generate"):
        start = time.perf_counter()
        run_study(profile, settings, stage=stage, echo=lambda _line: None)
        seconds[stage] = time.perf_counter() - start
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=str(ROOT / "params" / "ucmerced-cpu.yaml"))
    args = parser.parse_args()
    base_model_source(load_config(args.profile))  # pretrain the base once, untimed
    result = {"profile": Path(args.profile).name, "work": SMALL}
    for mode in ("none", "regional"):
        result[mode] = stage_seconds(args.profile, mode)
        print(mode, result[mode], flush=True)
    result["compiled_over_eager"] = {
        stage: result["regional"][stage] / result["none"][stage] for stage in result["none"]
    }
    print(json.dumps(result, indent=2))
    print(f"written to {save('cpu_compile', result)}")


if __name__ == "__main__":
    main()
