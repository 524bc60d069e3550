"""Seconds per pretraining step of the tiny base's transformer at several sizes.

    python bench/pretrain_width.py [--sizes 4x32x2x2,4x64x2x2,...] [--profile ...]

Each size is heads x head dim x double-stream blocks x single-stream blocks. One step is
what `synthaug.pretrain` runs: the tiny CLIP and T5 encode the captions, the flow-matching
loss at the profile's batch, backward, an AdamW step over the transformer and both text
encoders. Random weights and latents (the cost does not depend on them); the mean of 10
steps after 2 warm-up steps. Prints and writes `bench/results/pretrain_width.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from synthaug.config import load_config  # noqa: E402
from synthaug.families import family_named  # noqa: E402
from synthaug.flow import flow_matching_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def step_seconds(profile: str, heads: int, head_dim: int, double: int, single: int) -> dict:
    """Mean seconds per pretraining step, and the transformer's parameter count."""
    cfg = load_config(
        profile,
        {
            "generator.tiny.num_attention_heads": heads,
            "generator.tiny.attention_head_dim": head_dim,
            "generator.tiny.num_layers": double,
            "generator.tiny.num_single_layers": single,
        },
    )
    family = family_named(cfg.generator.family)
    pipe = family.tiny_pipeline(cfg.generator.tiny)
    transformer = pipe.transformer.train()
    encoders = [e.train() for e in family.text_encoders(pipe)]
    params = [*transformer.parameters(), *(p for e in encoders for p in e.parameters())]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    batch = cfg.generator.pretrain.batch_size
    down = 2 ** (len(cfg.generator.tiny.vae_channels) - 1)  # the VAE's downsampling
    channels, side = transformer.config.in_channels // 4, cfg.generator.resolution // down
    cache = {
        "latents": torch.randn(2 * batch, channels, side, side),
        "prompt_index": torch.arange(2 * batch) % 30,
    }
    captions = [f"an aerial image of class {i}" for i in range(30)]
    times = []
    for step in range(12):
        start = time.perf_counter()
        prompts = family.encode_prompts(pipe, captions, cfg.generator.max_sequence_length)
        rows = torch.randperm(2 * batch)[:batch]
        loss = flow_matching_loss(transformer, cache | prompts, rows, step, cfg, 0.1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - start)
    return {
        "size": f"{heads}x{head_dim}x{double}x{single}",
        "width": heads * head_dim,
        "transformer_parameters": sum(p.numel() for p in transformer.parameters()),
        "seconds_per_step": sum(times[2:]) / len(times[2:]),
        "batch": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=str(ROOT / "params" / "ucmerced-cpu.yaml"))
    parser.add_argument("--sizes", default="4x32x2x2,4x48x2x2,4x64x2x2,4x32x4x4")
    args = parser.parse_args()
    rows = [
        step_seconds(args.profile, *(int(n) for n in size.split("x")))
        for size in args.sizes.split(",")
    ]
    result = {"profile": Path(args.profile).name, "sizes": rows}
    print(json.dumps(result, indent=2))
    print(f"written to {save('pretrain_width', result)}")


if __name__ == "__main__":
    main()
