"""The paper profile on a GPU, before and after #25's changes, in one run: FLUX.1-dev's
shapes with random weights (no download), and the paper study's projected GPU-hours.

    python bench/gpu_flux.py            # on a CUDA GPU: FLUX.1-dev's transformer, bf16
    python bench/gpu_flux.py --tiny     # anywhere: tiny configs, to check the script

Parts (`--parts`, `bench/gpu_speed.py` has each): `lora` (today's step, eager with
prodigyopt, against synthaug's Prodigy, regional compilation and CUDA graphs, 200 steps
each from the same LoRA, with the loss-curve check), `tokens` (the faster step at 128 and
256 text tokens), `generation` (eager against compiled sampling, and the grey-level gap),
`classifier` (the real `fine_tune` on 10,000 JPEGs, DataLoader against preloaded and
compiled), and `sweep` (the batch sweep with and without checkpointing, and MFU; off by
default). Each part's wall time is in `part_seconds`; a mode that fails is recorded with
its error and the rest still measured.

The transformer is built from FLUX.1-dev's public config directly on the device in bf16,
frozen, with an fp32 LoRA of the profile's rank and targets. Attention runs on the
kernels the study uses (cuDNN's off: `synthaug.attention.avoid_cudnn_attention`).

MFU counts the model FLOPs of one training sample: 2·N·T forward and 2·N·T backward to
the inputs (the base is frozen: no weight gradients; the LoRA's are negligible), i.e.
4·N·T, plus attention's 12·L·T²·d (forward 4·L·T²·d, backward twice that), with N the
transformer's parameters, T the image + text tokens, L the blocks and d the width.
Divided by the GPU's dense bf16 peak.
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
import gpu_speed as speed  # noqa: E402
from common import RESULTS, save  # noqa: E402

from synthaug.attention import avoid_cudnn_attention  # noqa: E402
from synthaug.config import load_config  # noqa: E402
from synthaug.families import family_named  # noqa: E402
from synthaug.lora import lora_targets  # noqa: E402

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
# black-forest-labs/FLUX.2-klein-base-4B, transformer/config.json (as diffusers' conversion
# script writes it for klein-4b; the text encoder is Qwen3-4B, 2,560 wide, 3 layers stacked).
KLEIN_BASE_4B = {
    "patch_size": 1,
    "in_channels": 128,
    "num_layers": 5,
    "num_single_layers": 20,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 7680,
    "timestep_guidance_channels": 256,
    "mlp_ratio": 3.0,
    "axes_dims_rope": (32, 32, 32, 32),
    "rope_theta": 2000,
    "guidance_embeds": False,
}
KLEIN_TINY = {
    **KLEIN_BASE_4B,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 96,
    "axes_dims_rope": (4, 4, 4, 4),
}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, no sparsity


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


def build_transformer(
    config: dict, rank: int, alpha: float, targets: list[str], device, family: str = "flux1"
):
    """The family's transformer in bf16 on `device`, frozen, with an fp32 LoRA as the study
    adds."""
    import diffusers
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    with built_on(device, torch.bfloat16):
        model = getattr(diffusers, family_named(family).transformer_class)(**config)
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
                speed.sync(device)
                start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                out = model(**feed)[0]
            out.float().pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        speed.sync(device)
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


PARTS = ("lora", "tokens", "generation", "classifier", "sweep")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny config (CPU check)")
    parser.add_argument("--profile", default=str(ROOT / "params" / "paper.yaml"))
    parser.add_argument(
        "--parts", default="lora,tokens,generation,classifier", help=f"of {','.join(PARTS)}"
    )
    parser.add_argument("--batches", default="1,2,4,8,16", help="the sweep's batch sizes")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per sweep point")
    parser.add_argument("--curve-steps", type=int, default=200, help="LoRA steps per variant")
    parser.add_argument("--warmup", type=int, default=10, help="untimed first steps")
    parser.add_argument("--cell-images", type=int, default=10000, help="JPEGs of the cell")
    parser.add_argument(
        "--attention", choices=ATTENTION, default="synthaug", help="SDPA kernels (see ATTENTION)"
    )
    parser.add_argument(
        "--add", action="store_true", help="keep the saved results' other parts (a split run)"
    )
    parser.add_argument(
        "--family",
        choices=["flux1", "flux2-klein"],
        default="flux1",
        help="flux2-klein: FLUX.2 [klein] base 4B's shapes through the family interface "
        "(LoRA samples/s and memory, a sampling step), with params/paper-flux2-klein.yaml",
    )
    args = parser.parse_args()
    if args.family != "flux1":
        return family_main(args)
    parts = set(args.parts.split(","))
    select_attention(args.attention)
    cfg = load_config(args.profile)
    g = cfg.generator
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = TINY if args.tiny else FLUX_DEV
    n_image = image_tokens(g.resolution) if not args.tiny else 16
    n_text = g.max_sequence_length if not args.tiny else 8
    targets = family_named(g.family).targets(g.lora.target_modules)
    model, n_params = build_transformer(config, g.lora.rank, g.lora.alpha, targets, device)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else None
    result: dict = {
        "config": "tiny" if args.tiny else "FLUX.1-dev",
        "gpu": gpu,
        "attention": args.attention,
        "profile": Path(args.profile).name,
        "transformer_params": n_params,
        "tokens_image_text": [n_image, n_text],
        "lora_settings": {"rank": g.lora.rank, "alpha": g.lora.alpha, "optimizer": g.optimizer},
        "part_seconds": {},
    }

    def part(name: str, measure) -> None:
        if name in parts:
            begin = time.perf_counter()
            result[name] = measure()
            result["part_seconds"][name] = time.perf_counter() - begin

    tokens = (n_image, n_text)
    part(
        "lora",
        lambda: speed.lora_before_after(
            model, config, tokens, device, args.curve_steps, args.warmup
        ),
    )
    lengths = [128, 256] if not args.tiny else [4]
    part(
        "tokens",
        lambda: speed.text_token_speeds(
            model, config, n_image, lengths, device, 2 * args.warmup, args.warmup, "regional"
        ),
    )
    gen = cfg.generation
    part(
        "generation",
        lambda: speed.generation_before_after(
            model, config, tokens, gen.batch_size, gen.steps, device, args.tiny
        ),
    )
    part(
        "classifier",
        lambda: speed.classifier_before_after(
            args.profile, args.cell_images, 2000 if not args.tiny else 38, args.tiny
        ),
    )
    part("sweep", lambda: sweep(model, config, n_params, tokens, device, args, gpu))
    name = "gpu_flux_tiny" if args.tiny else "gpu_flux"
    saved = RESULTS / f"{name}.json"
    if args.add and saved.exists():
        earlier = json.loads(saved.read_text())
        result = {**{k: earlier[k] for k in PARTS if k in earlier}, **result}
        result["part_seconds"] = {**earlier.get("part_seconds", {}), **result["part_seconds"]}
    result["projection"] = projection(cfg, result)
    print(json.dumps(result, indent=2))
    print(f"written to {save(name, result)}")


def family_main(args) -> None:
    """`--family flux2-klein`: its transformer at the profile's shapes, random weights."""
    profile = args.profile.replace("paper.yaml", f"paper-{args.family}.yaml")
    cfg = load_config(profile)
    g, family = cfg.generator, family_named(args.family)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = KLEIN_TINY if args.tiny else KLEIN_BASE_4B
    side = 2 if args.tiny else g.resolution // 16  # 8x VAE, then 2x2 patchified
    n_text = 8 if args.tiny else g.max_sequence_length
    model, n_params = build_transformer(
        config,
        g.lora.rank,
        g.lora.alpha,
        family.targets(g.lora.target_modules),
        device,
        args.family,
    )
    shapes = {
        "latents": (config["in_channels"], side, side),
        "prompt_embeds": (n_text, config["joint_attention_dim"]),
        "generation_batch": cfg.generation.batch_size,
        "passes_per_step": 2 if cfg.generation.guidance_scale > 1 else 1,
    }
    result = {
        "config": f"tiny {args.family}" if args.tiny else "FLUX.2-klein-base-4B",
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "profile": Path(profile).name,
        "transformer_params": n_params,
        "tokens_image_text": [side * side, n_text],
        **speed.family_step_speeds(args.family, model, shapes, device, args.steps, args.warmup),
    }
    name = f"gpu_{args.family.replace('-', '_')}" + ("_tiny" if args.tiny else "")
    print(json.dumps(result, indent=2))
    print(f"written to {save(name, result)}")


def sweep(model, config, n_params, tokens, device, args, gpu) -> list[dict]:
    """LoRA samples/s, memory and MFU over batch sizes, with and without checkpointing."""
    rows = []
    for checkpointing in (True, False):
        for batch in [int(b) for b in args.batches.split(",")]:
            row = time_lora(model, config, batch, tokens, device, args.steps, checkpointing)
            rows.append(row)
            if row.get("oom"):
                break
    peak = next((v for k, v in PEAK_BF16.items() if gpu and k in gpu), None)
    for row in rows:
        if "samples_per_s" in row:
            flops = train_flops(config, n_params, tokens[0] + row["text_tokens"])
            row["model_tflops_per_s"] = flops * row["samples_per_s"] / 1e12
            row["mfu"] = flops * row["samples_per_s"] / peak if peak else None
    return rows


def projection(cfg, result: dict) -> dict | None:
    """The paper study's GPU-hours before and after, from what this run measured; each
    stage's compile time counted once per task that compiles (LoRA 1, generation 1 per
    shard, classifier 1 per cell)."""
    if not {"lora", "generation", "classifier"} <= result.keys():
        return None
    lora = result["lora"]["variants"]
    before_lora, after_lora = lora[0], lora[2]
    gen = result["generation"]
    cell = result["classifier"]
    if "samples_per_s" not in before_lora or "samples_per_s" not in after_lora:
        return None
    from synthaug.design import study_cells

    g = cfg.generator
    samples = cfg.splits.lora * g.repeats * g.epochs
    cells = len(study_cells(cfg, n_classes=38))  # every generator seed's
    shards = cfg.cluster.generation_shards
    hours = {}
    for name, lora_row, gen_row, cell_s in (
        ("before", before_lora, gen["none"], cell["projected_cell_s"]["before"]),
        ("after", after_lora, gen["regional"], cell["projected_cell_s"]["after"]),
    ):
        hours[name] = {
            "lora_h": (samples / lora_row["samples_per_s"] + lora_row["first_steps_s"]) / 3600,
            "generate_h": (
                cfg.generation.count / gen_row["images_per_s"] + shards * gen_row["first_call_s"]
            )
            / 3600,
            "classifier_h": cells * cell_s / 3600,
        }
    hours["after"]["classifier_h"] += cell["projected_cell_s"]["first_cell_extra_s"] / 3600
    for name in ("before", "after"):
        hours[name]["total_h"] = sum(hours[name].values())
    hours["note"] = (
        "generation counts the transformer only (T5, CLIP and VAE excluded); the cells are "
        "the classifier cells of every generator seed, each as long as the measured one"
    )
    return hours


if __name__ == "__main__":
    main()
