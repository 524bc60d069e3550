"""CAS of the CPU profile's generator against the minutes spent pretraining its base.

    python bench/cas_vs_pretraining.py --steps 500:1500,1500:1500 [--profile ...]

For each pair of VAE:transformer pretraining steps: pretrain the base (or reuse it from
the model cache), train the study's LoRA, generate the synthetic set, and train the
generated-only classifier (CAS) for the profile's seeds, each in its own run folder under
`--out`. Prints and writes `bench/results/cas_vs_pretraining.json`, so the trade-off
between pretraining time and class information is chosen on numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cas_levers import measure  # noqa: E402
from common import save  # noqa: E402

from synthaug.config import load_config  # noqa: E402
from synthaug.io import read_json  # noqa: E402
from synthaug.pretrain import base_model_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def point(profile: str, vae_steps: int, transformer_steps: int, out: Path) -> dict:
    """One point of the curve: pretraining minutes, the base's final losses, and CAS."""
    overrides = {
        "generator.pretrain.vae_steps": vae_steps,
        "generator.pretrain.transformer_steps": transformer_steps,
    }
    result = measure(profile, f"pretrain-{vae_steps}-{transformer_steps}", overrides, out)
    base = read_json(Path(base_model_source(load_config(profile, overrides))) / "pretraining.json")
    return {
        "vae_steps": vae_steps,
        "transformer_steps": transformer_steps,
        "vae_loss_last_100": float(np.mean(base["vae_losses"][-100:])),
        "transformer_loss_last_100": float(np.mean(base["transformer_losses"][-100:])),
        **result,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=str(ROOT / "params" / "ucmerced-cpu.yaml"))
    parser.add_argument(
        "--steps", default="500:1500,1500:1500", help="VAE:transformer pretraining steps, ..."
    )
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-cas"))
    args = parser.parse_args()
    pairs = [[int(n) for n in pair.split(":")] for pair in args.steps.split(",")]
    points = [point(args.profile, v, t, Path(args.out)) for v, t in pairs]
    result = {"profile": Path(args.profile).name, "points": points}
    print(json.dumps(result, indent=2))
    print(f"written to {save('cas_vs_pretraining', result)}")


if __name__ == "__main__":
    main()
