"""Which machine settings change the tiny base's bits: a short pretraining, each in a fresh
process, under one change at a time.

    python bench/base_drift.py [--steps 30] [--loaded 4]

The same short pretraining (the smoke profile's tiny base on 2 AID images a class, `--steps`
VAE and transformer steps) runs in a fresh process with its own empty model cache: as
this machine runs it, `--loaded` times beside a busy process (the same bits each time?),
with the transformer's pretraining on 1 thread instead of 2 (`generator.pretrain.threads`),
and with torch's kernels held to AVX2 (`ATEN_CPU_CAPABILITY=avx2`, as on a CPU without
AVX-512). Each run's base is hashed (`io.safetensors_digest` of the transformer and the
VAE); runs with the same digest made the same base bit for bit. Prints and writes
`bench/results/base_drift.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The child: pretrain the small base into its own cache and print its digest and ISA.
CHILD = """
import json, sys, torch
from synthaug.config import load_config
from synthaug.io import safetensors_digest
from synthaug.pretrain import base_model_source
steps, threads = int(sys.argv[1]), int(sys.argv[2])
cfg = load_config("params/smoke.yaml", {
    "generator.pretrain.data.local": "aid", "generator.pretrain.max_per_class": 2,
    "generator.pretrain.vae_steps": steps, "generator.pretrain.transformer_steps": steps,
    "generator.pretrain.batch_size": 8, "generator.pretrain.train_text_encoders": True,
    "generator.pretrain.threads": threads})
base = base_model_source(cfg)
parts = [f"{base}/transformer/diffusion_pytorch_model.safetensors",
         f"{base}/vae/diffusion_pytorch_model.safetensors"]
print(json.dumps({"digest": [safetensors_digest(p)[:16] for p in parts],
                  "isa": torch.backends.cpu.get_cpu_capability()}))
"""


def conditions(loaded: int) -> dict[str, tuple[dict, int, bool]]:
    """Name: (environment, pretraining threads, beside a busy process)."""
    runs = {"this machine": ({}, 2, False)}
    runs |= {f"beside a busy process, run {i + 1}": ({}, 2, True) for i in range(loaded)}
    runs["transformer on 1 thread"] = ({}, 1, False)
    runs["AVX2 kernels (ATEN_CPU_CAPABILITY=avx2)"] = ({"ATEN_CPU_CAPABILITY": "avx2"}, 2, False)
    return runs


def pretrain_in_fresh_process(steps: int, env: dict, threads: int, loaded: bool) -> dict:
    """One pretraining in a new process with an empty cache; `loaded`: beside a busy loop."""
    load = None
    if loaded:
        load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with tempfile.TemporaryDirectory() as cache:
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(steps), str(threads)],
                cwd=ROOT,
                env={**os.environ, **env, "SYNTHAUG_CACHE": cache},
                capture_output=True,
                text=True,
                check=True,
            )
    finally:
        if load is not None:
            load.kill()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--loaded", type=int, default=4)
    args = parser.parse_args()
    runs = {}
    for name, (env, threads, loaded) in conditions(args.loaded).items():
        runs[name] = pretrain_in_fresh_process(args.steps, env, threads, loaded)
        same = runs[name]["digest"] == runs["this machine"]["digest"]
        print(f"{name:45s} {runs[name]} {'same bits' if same else 'OTHER BITS'}")
    reference = runs["this machine"]["digest"]
    summary = {name: run["digest"] == reference for name, run in runs.items()}
    print(save("base_drift", {"steps": args.steps, "runs": runs, "same_as_first": summary}))


if __name__ == "__main__":
    main()
