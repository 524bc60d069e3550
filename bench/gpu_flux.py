"""FLUX.1-dev-shaped timings on a GPU (random weights; no download), and the projected
cost of the paper's study.

    python bench/gpu_flux.py            # on a CUDA GPU: the real FLUX.1-dev shapes, bf16
    python bench/gpu_flux.py --tiny     # anywhere: a tiny config, to check the script

Measures the LoRA training step of `FluxTransformer2DModel` built from FLUX.1-dev's
public transformer config (rank as the paper profile, 256x256 images = 16x16 packed
latent tokens, 512 T5 tokens) over a batch-size sweep: samples/s, peak memory and MFU;
the transformer's denoising cost at 28 steps (generation images/s, text encoders and
VAE excluded); and ViT-base fine-tuning images/s at 224. From these it projects the wall
time of the paper's study, stage by stage, on one GPU.

MFU counts model FLOPs per sample as 2 * N * T for the forward pass and 2 * 2 * N * T for
the backward pass (input gradients only: the base weights are frozen, LoRA's own
weights are negligible), i.e. 6 * N * T, with N the transformer's parameters and T the
image + text tokens; divided by the GPU's dense bf16 peak.
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

from synthaug.config import LoraConfig as LoraSettings  # noqa: E402

# black-forest-labs/FLUX.1-dev, transformer/config.json (public).
FLUX_DEV = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
TINY = {
    **FLUX_DEV,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "axes_dims_rope": (4, 6, 6),
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, no sparsity
# The paper's study (params/paper.yaml).
PAPER = {
    "lora_images": 780,
    "repeats": 5,
    "epochs": 6,
    "generated": 8000,
    "steps": 28,
    "mix_size": 10000,
    "mixes": 7,
    "seeds": 3,
    "vit_epochs": 10,
    "test_images": 2000,
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def inputs(config: dict, batch: int, image_tokens: int, text_tokens: int, device, dtype):
    from diffusers import FluxPipeline

    side = int(image_tokens**0.5)
    return {
        "hidden_states": torch.randn(
            batch, image_tokens, config["in_channels"], device=device, dtype=dtype
        ),
        "timestep": torch.rand(batch, device=device, dtype=dtype),
        "guidance": torch.full((batch,), 1.0, device=device),
        "pooled_projections": torch.randn(
            batch, config["pooled_projection_dim"], device=device, dtype=dtype
        ),
        "encoder_hidden_states": torch.randn(
            batch, text_tokens, config["joint_attention_dim"], device=device, dtype=dtype
        ),
        "txt_ids": torch.zeros(text_tokens, 3, device=device, dtype=dtype),
        "img_ids": FluxPipeline._prepare_latent_image_ids(batch, side, side, device, dtype),
        "return_dict": False,
    }


def bench_lora(config, batches, tokens, rank, device, dtype, steps, checkpointing) -> list[dict]:
    from diffusers import FluxTransformer2DModel
    from peft import LoraConfig

    model = FluxTransformer2DModel(**config).to(device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    model.requires_grad_(False)
    model.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, target_modules=LoraSettings().target_modules)
    )
    if checkpointing:
        model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rows = []
    image_tokens, text_tokens = tokens
    for batch in batches:
        try:
            feed = inputs(config, batch, image_tokens, text_tokens, device, dtype)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for i in range(steps + 2):
                if i == 2:
                    sync(device)
                    start = time.perf_counter()
                out = model(**feed)[0]
                out.float().pow(2).mean().backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            sync(device)
            seconds = (time.perf_counter() - start) / steps
        except torch.cuda.OutOfMemoryError:
            rows.append({"batch_size": batch, "oom": True})
            torch.cuda.empty_cache()
            break
        flops = 6 * n_params * (image_tokens + text_tokens) * batch
        rows.append(
            {
                "batch_size": batch,
                "samples_per_s": batch / seconds,
                "step_s": seconds,
                "model_tflops_per_s": flops / seconds / 1e12,
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30
                if device.type == "cuda"
                else None,
            }
        )
    return rows, n_params


@torch.no_grad()
def bench_denoise(config, batch, tokens, steps, device, dtype) -> float:
    from diffusers import FluxTransformer2DModel

    model = FluxTransformer2DModel(**config).to(device, dtype).eval()
    feed = inputs(config, batch, *tokens, device, dtype)
    model(**feed)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        model(**feed)
    sync(device)
    return batch / (time.perf_counter() - start)


def bench_vit(device, dtype, batch: int, steps: int, tiny: bool) -> float:
    from transformers import ViTConfig, ViTForImageClassification

    config = (
        ViTConfig(num_labels=38)
        if not tiny
        else ViTConfig(
            num_labels=38,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        )
    )
    model = ViTForImageClassification(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    pixels = torch.randn(batch, 3, config.image_size, config.image_size, device=device)
    labels = torch.randint(38, (batch,), device=device)
    for i in range(steps + 2):
        if i == 2:
            sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def project(lora_rate: float, batch: int, gen_rate: float, vit_rate: float) -> dict:
    """Hours of each stage of the paper's study on one GPU of the measured speed."""
    p = PAPER
    lora_samples = p["lora_images"] * p["repeats"] * p["epochs"]
    cells = (p["mixes"] * 2 + 2) * p["seeds"]  # mixes, same-count real, full real, CAS
    vit_images = cells * p["vit_epochs"] * (p["mix_size"] + p["test_images"])
    return {
        "lora_h": lora_samples / lora_rate / 3600,
        "lora_batch_size": batch,
        "generate_h": p["generated"] / gen_rate / 3600,
        "classifier_h": vit_images / vit_rate / 3600,
        "classifier_cells": cells,
        "note": "generation counts the transformer only (T5, CLIP and VAE excluded)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config (CPU check)")
    parser.add_argument("--batches", default="1,2,4,8,16")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--checkpointing", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    config = TINY if args.tiny else FLUX_DEV
    tokens = (16 * 16, 512) if not args.tiny else (4 * 4, 8)
    batches = [int(b) for b in args.batches.split(",")]
    lora, n_params = bench_lora(
        config, batches, tokens, 16, device, dtype, args.steps, args.checkpointing
    )
    best = max((r for r in lora if "samples_per_s" in r), key=lambda r: r["samples_per_s"])
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else None
    peak = next((v for k, v in PEAK_BF16.items() if gpu and k in gpu), None)
    for row in lora:
        if peak and "model_tflops_per_s" in row:
            row["mfu"] = row["model_tflops_per_s"] * 1e12 / peak
    gen_rate = (
        bench_denoise(config, min(8, max(batches)), tokens, PAPER["steps"], device, dtype)
        / PAPER["steps"]
    )
    vit_rate = bench_vit(device, dtype, 64 if not args.tiny else 8, args.steps, args.tiny)
    result = {
        "config": "tiny" if args.tiny else "FLUX.1-dev",
        "transformer_params": n_params,
        "tokens_image_text": tokens,
        "lora_rank": 16,
        "lora": lora,
        "generation_images_per_s_28_steps": gen_rate,
        "vit_base_train_images_per_s": vit_rate,
        "projection": project(best["samples_per_s"], best["batch_size"], gen_rate, vit_rate),
    }
    print(json.dumps(result, indent=2))
    print(f"written to {save('gpu_flux_tiny' if args.tiny else 'gpu_flux', result)}")


if __name__ == "__main__":
    main()
