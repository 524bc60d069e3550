"""What the paper profile runs, timed on a GPU with FLUX.1-dev's shapes (random weights; no
download), and the projected cost of the paper's study.

    python bench/gpu_flux.py            # on a CUDA GPU: FLUX.1-dev's transformer, bf16
    python bench/gpu_flux.py --tiny     # anywhere: a tiny config, to check the script

The transformer is built from FLUX.1-dev's public config directly on the device in bf16
(no fp32 copy on the CPU). The LoRA is trained as `params/paper.yaml` trains it: frozen
bf16 base, fp32 LoRA weights (its rank and target modules), bf16 autocast, Prodigy,
gradient checkpointing on and off, batch 1 (the profile's) and a batch sweep, at the
profile's resolution and `max_sequence_length` (and at 128 text tokens, to show what a
shorter prompt budget would save). Then the transformer's denoising at the profile's
generation batch and steps (text encoders and VAE excluded), and ViT-base fine-tuning.
Attention runs on the kernels the study uses (cuDNN's off: `synthaug.models.
avoid_cudnn_attention`); `--attention default` is torch's own choice, cuDNN's included.
One step at the profile's batch is also split into its parts (forward, backward, update).

MFU counts the model FLOPs of one training sample: 2·N·T forward and 2·N·T backward to
the inputs (the base is frozen: no weight gradients; the LoRA's are negligible), i.e.
4·N·T, plus attention's 12·L·T²·d (forward 4·L·T²·d, backward twice that), with N the
transformer's parameters, T the image + text tokens, L the blocks and d the width.
Recomputation under gradient checkpointing is not counted (it is overhead, not model
work). Divided by the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from synthaug.config import load_config  # noqa: E402
from synthaug.lora import lora_targets  # noqa: E402
from synthaug.models import avoid_cudnn_attention  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def built_on(device: torch.device, dtype: torch.dtype):
    """Modules constructed inside are allocated on `device` in `dtype` directly."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            yield
    finally:
        torch.set_default_dtype(previous)


ATTENTION = ("synthaug", "default", "flash", "mem_efficient", "math")


def select_attention(name: str) -> None:
    """SDPA's kernels: synthaug's choice (all but cuDNN's), torch's default (cuDNN's too),
    or one family alone."""
    if name == "synthaug":
        avoid_cudnn_attention()
    elif name != "default":
        for family in ("flash", "mem_efficient", "math", "cudnn"):
            getattr(torch.backends.cuda, f"enable_{family}_sdp")(family == name)


def image_tokens(resolution: int) -> int:
    """Packed latent tokens of a square image: 8x VAE downsampling, then 2x2 patches."""
    return (resolution // 16) ** 2


def train_flops(config: dict, n_params: int, tokens: int) -> float:
    """Model FLOPs of one training sample with a frozen base (see the module docstring)."""
    blocks = config["num_layers"] + config["num_single_layers"]
    width = config["attention_head_dim"] * config["num_attention_heads"]
    return 4 * n_params * tokens + 12 * blocks * tokens**2 * width


def inputs(config: dict, batch: int, n_image: int, n_text: int, device, dtype) -> dict:
    from diffusers import FluxPipeline

    side = int(n_image**0.5)
    return {
        "hidden_states": torch.randn(
            batch, n_image, config["in_channels"], device=device, dtype=dtype
        ),
        "timestep": torch.rand(batch, device=device, dtype=dtype),
        "guidance": torch.full((batch,), 1.0, device=device),
        "pooled_projections": torch.randn(
            batch, config["pooled_projection_dim"], device=device, dtype=dtype
        ),
        "encoder_hidden_states": torch.randn(
            batch, n_text, config["joint_attention_dim"], device=device, dtype=dtype
        ),
        "txt_ids": torch.zeros(n_text, 3, device=device, dtype=dtype),
        "img_ids": FluxPipeline._prepare_latent_image_ids(batch, side, side, device, dtype),
        "return_dict": False,
    }


def build_transformer(config: dict, rank: int, alpha: float, targets: list[str], device):
    """FLUX's transformer in bf16 on `device`, frozen, with an fp32 LoRA as the study adds."""
    from diffusers import FluxTransformer2DModel
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    with built_on(device, torch.bfloat16):
        model = FluxTransformer2DModel(**config)
    n_params = sum(p.numel() for p in model.parameters())
    model.requires_grad_(False)
    model.add_adapter(
        LoraConfig(r=rank, lora_alpha=alpha, target_modules=lora_targets(model, targets))
    )
    cast_training_params(model, torch.float32)
    return model, n_params


def set_checkpointing(model, on: bool) -> None:
    if on:
        model.enable_gradient_checkpointing()
    else:
        model.disable_gradient_checkpointing()


def time_lora(model, config, batch, tokens, device, steps, checkpointing) -> dict:
    """Seconds per optimizer step of the LoRA loop: autocast bf16, Prodigy."""
    from prodigyopt import Prodigy

    set_checkpointing(model, checkpointing)
    model.train()
    optimizer = Prodigy([p for p in model.parameters() if p.requires_grad], lr=1.0)
    feed = inputs(config, batch, *tokens, device, torch.bfloat16)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        for i in range(steps + 2):
            if i == 2:
                sync(device)
                start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = model(**feed)[0]
            out.float().pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sync(device)
    except torch.cuda.OutOfMemoryError:
        return {"batch_size": batch, "checkpointing": checkpointing, "oom": True}
    finally:
        del optimizer
    seconds = (time.perf_counter() - start) / steps
    return {
        "batch_size": batch,
        "checkpointing": checkpointing,
        "text_tokens": tokens[1],
        "samples_per_s": batch / seconds,
        "step_s": seconds,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30
        if device.type == "cuda"
        else None,
    }


def step_parts(model, config, batch, tokens, device, steps, checkpointing) -> dict:
    """Seconds of one LoRA step's parts: the forward alone (no graph), forward + backward,
    and the optimizer's update, Prodigy's (one host sync per LoRA tensor) and AdamW's."""
    from prodigyopt import Prodigy

    feed = inputs(config, batch, *tokens, device, torch.bfloat16)
    model.train()
    set_checkpointing(model, checkpointing)

    def forward_backward() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(**feed)[0]
        out.float().pow(2).mean().backward()

    def forward() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            model(**feed)

    def seconds(fn) -> float:
        fn()
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        return (time.perf_counter() - start) / steps

    params = [p for p in model.parameters() if p.requires_grad]
    parts = {
        "batch_size": batch,
        "checkpointing": checkpointing,
        "forward_s": seconds(forward),
        "forward_backward_s": seconds(forward_backward),
        "prodigy_step_s": seconds(Prodigy(params, lr=1.0).step),
        "adamw_step_s": seconds(torch.optim.AdamW(params, lr=1e-4).step),
        "lora_tensors": len(params),
    }
    model.zero_grad(set_to_none=True)
    return parts


@torch.no_grad()
def denoise_rate(model, config, batch, tokens, steps, device) -> float:
    """Images per second of `steps` transformer evaluations (the LoRA fused: base speed)."""
    model.eval()
    model.disable_adapters()
    feed = inputs(config, batch, *tokens, device, torch.bfloat16)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        model(**feed)
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            model(**feed)
        sync(device)
    model.enable_adapters()
    return batch / (time.perf_counter() - start)


def vit_rate(device, batch: int, steps: int, tiny: bool) -> float:
    """ViT-base fine-tuning images/s at 224 (fp32 weights, bf16 autocast, as the profile)."""
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
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return batch * steps / (time.perf_counter() - start)


def project(cfg, lora_rate: float, gen_rate: float, vit_images_per_s: float) -> dict:
    """Hours of each stage of the study `cfg` describes on one GPU of the measured speed."""
    from synthaug.design import study_cells

    g, c = cfg.generator, cfg.classifier
    lora_samples = cfg.splits.lora * g.repeats * g.epochs
    cells = study_cells(cfg, n_classes=38)  # PatternNet's classes (only a sweep uses them)
    train_images = sum(cell.n_generated + cell.n_real for cell in cells)
    vit_images = c.epochs * (train_images + len(cells) * cfg.splits.test)
    return {
        "lora_samples": lora_samples,
        "lora_h": lora_samples / lora_rate / 3600,
        "generate_h": cfg.generation.count / gen_rate / 3600,
        "classifier_cells": len(cells),
        "classifier_h": vit_images / vit_images_per_s / 3600,
        "note": "generation counts the transformer only (T5, CLIP and VAE excluded); "
        "classifier images include each epoch's test pass at training speed (an upper bound)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config (CPU check)")
    parser.add_argument("--profile", default=str(ROOT / "params" / "paper.yaml"))
    parser.add_argument("--batches", default="1,2,4,8,16", help="the batch-size sweep")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument(
        "--attention", choices=ATTENTION, default="synthaug", help="SDPA kernels (see ATTENTION)"
    )
    args = parser.parse_args()
    select_attention(args.attention)
    cfg = load_config(args.profile)
    g = cfg.generator
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = TINY if args.tiny else FLUX_DEV
    n_image = image_tokens(g.resolution) if not args.tiny else 16
    n_text = g.max_sequence_length if not args.tiny else 8
    model, n_params = build_transformer(
        config, g.lora.rank, g.lora.alpha, g.lora.target_modules, device
    )

    rows = []
    for checkpointing in (True, False):
        for batch in [int(b) for b in args.batches.split(",")]:
            row = time_lora(
                model, config, batch, (n_image, n_text), device, args.steps, checkpointing
            )
            rows.append(row)
            if row.get("oom"):
                break
    short_text = 128 if not args.tiny else 4
    at_128 = time_lora(
        model,
        config,
        g.batch_size,
        (n_image, short_text),
        device,
        args.steps,
        g.gradient_checkpointing,
    )
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else None
    peak = next((v for k, v in PEAK_BF16.items() if gpu and k in gpu), None)
    for row in [*rows, at_128]:
        if "samples_per_s" in row:
            flops = train_flops(config, n_params, n_image + row["text_tokens"])
            row["model_tflops_per_s"] = flops * row["samples_per_s"] / 1e12
            row["mfu"] = flops * row["samples_per_s"] / peak if peak else None
    profile_row = next(
        r
        for r in rows
        if r["batch_size"] == g.batch_size and r["checkpointing"] == g.gradient_checkpointing
    )
    parts = step_parts(
        model,
        config,
        g.batch_size,
        (n_image, n_text),
        device,
        args.steps,
        g.gradient_checkpointing,
    )
    gen = cfg.generation
    gen_rate = denoise_rate(model, config, gen.batch_size, (n_image, n_text), gen.steps, device)
    vit = vit_rate(device, cfg.classifier.batch_size, args.steps, args.tiny)
    result = {
        "config": "tiny" if args.tiny else "FLUX.1-dev",
        "attention": args.attention,
        "profile": Path(args.profile).name,
        "transformer_params": n_params,
        "tokens_image_text": [n_image, n_text],
        "lora": {"rank": g.lora.rank, "alpha": g.lora.alpha, "optimizer": "prodigy"},
        "lora_steps": rows,
        "lora_at_128_text_tokens": at_128,
        "lora_step_parts": parts,
        "generation_images_per_s": gen_rate,
        "generation_batch_steps": [gen.batch_size, gen.steps],
        "vit_train_images_per_s": vit,
        "projection": project(cfg, profile_row["samples_per_s"], gen_rate, vit),
        "projection_lora_h_at_128_text_tokens": cfg.splits.lora
        * g.repeats
        * g.epochs
        / at_128["samples_per_s"]
        / 3600
        if "samples_per_s" in at_128
        else None,
    }
    print(json.dumps(result, indent=2))
    print(f"written to {save('gpu_flux_tiny' if args.tiny else 'gpu_flux', result)}")


if __name__ == "__main__":
    main()
