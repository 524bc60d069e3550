"""Stage 1: one LoRA on the FLUX transformer for all classes (the class name in each prompt).

The loop, step by step:
1. encode every LoRA-training image with the VAE and every prompt with CLIP + T5 once,
   cache the tensors to disk, then free the VAE and the text encoders;
2. add a `peft` LoRA to the frozen `FluxTransformer2DModel`;
3. each epoch visits every image `repeats` times in a seeded shuffle; each step draws
   noise and a flow-matching time, and regresses the velocity `noise - latents` on the
   packed latents, as FLUX is trained (rectified flow);
4. checkpoint every N steps (LoRA, optimizer, scheduler, step), atomically; a restarted
   run resumes there and ends with the same LoRA as an uninterrupted one (the noise of
   step k is drawn from a generator seeded by (seed, k), the order of epoch e by (seed, e));
5. save `pytorch_lora_weights.safetensors` in the diffusers format, a per-epoch loss log
   and a grid of samples per epoch.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from synthaug.config import TINY, StudyConfig, config_hash
from synthaug.data import ImageLoader, prepare_data
from synthaug.io import atomic_write_bytes, atomic_write_text, write_json
from synthaug.models import load_flux_pipeline, make_accelerator, tiny_flux_dir, weight_dtype
from synthaug.vocab import PROMPT_WORDS, caption_words

log = logging.getLogger(__name__)
WEIGHTS = "pytorch_lora_weights.safetensors"


def lora_dir(cfg: StudyConfig) -> Path:
    return cfg.run_dir / "lora"


def base_model_source(cfg: StudyConfig) -> str:
    """The FluxPipeline to adapt: the hub id / folder, or the tiny pipeline built locally
    (pretrained when the profile says so). It depends on the base's own settings only,
    never on the study's dataset: every study with the same base shares one cached copy."""
    if cfg.generator.base_model == TINY:
        if cfg.generator.pretrain is not None:
            from synthaug.pretrain import pretrained_base_dir

            return pretrained_base_dir(cfg)
        return str(tiny_flux_dir(cfg.generator.tiny))
    return cfg.generator.base_model


def prompt_for(cfg: StudyConfig, label: str) -> str:
    """The class's prompt, its folder name written as words (`golfcourse` as `golf course`)."""
    return cfg.generation.prompt_template.format(class_name=caption_words(label))


def _to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    image = image.resize((size, size), Image.Resampling.BICUBIC)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(size, size, 3).permute(2, 0, 1).float() / 127.5 - 1.0


@torch.no_grad()
def encode_training_set(
    cfg: StudyConfig, pipe, labels: list[str], images: list[Image.Image]
) -> dict[str, torch.Tensor]:
    """VAE latents (scaled and shifted as FLUX expects) and text embeddings, once, on the
    device of the pipeline's encoders."""
    vae = pipe.vae
    latents = []
    for start in range(0, len(images), 8):
        batch = torch.stack(
            [_to_tensor(im, cfg.generator.resolution) for im in images[start : start + 8]]
        ).to(vae.device, vae.dtype)
        mean = vae.encode(batch).latent_dist.mode()
        latents.append((mean - vae.config.shift_factor) * vae.config.scaling_factor)
    return {"latents": torch.cat(latents).float(), **encode_class_prompts(cfg, pipe, labels)}


def encode_prompts(pipe, prompts: list[str], max_sequence_length: int) -> dict[str, torch.Tensor]:
    """Each prompt encoded by CLIP (pooled) and T5 (sequence), followed by the empty prompt
    (the last row: the unconditional caption of caption dropout and true CFG)."""
    embeds, pooled, _ = pipe.encode_prompt(
        [*prompts, ""], prompt_2=None, max_sequence_length=max_sequence_length
    )
    return {"prompt_embeds": embeds.float(), "pooled_prompt_embeds": pooled.float()}


@torch.no_grad()
def encode_class_prompts(cfg: StudyConfig, pipe, labels: list[str]) -> dict[str, torch.Tensor]:
    """Each class prompt (classes sorted) encoded once, and each label's row among them."""
    classes = sorted(set(labels))
    encoded = encode_prompts(
        pipe, [prompt_for(cfg, c) for c in classes], cfg.generator.max_sequence_length
    )
    index = {label: i for i, label in enumerate(classes)}
    device = encoded["prompt_embeds"].device
    return {"prompt_index": torch.tensor([index[x] for x in labels], device=device), **encoded}


def sample_sigmas(kind: str, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Flow-matching times in (0, 1): logit-normal (SD3/FLUX trainers), uniform, or a
    logit-normal shifted toward noise (shift 3, FLUX.1-dev's scheduler shift)."""
    if kind == "uniform":
        return torch.rand(batch, generator=generator)
    sigmas = torch.sigmoid(torch.randn(batch, generator=generator))
    if kind == "shifted_sigmoid":
        shift = 3.0
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return sigmas


def flow_matching_loss(
    transformer,
    cache: dict[str, torch.Tensor],
    rows: torch.Tensor,
    step_seed: int,
    cfg: StudyConfig,
    caption_dropout: float = 0.0,
) -> torch.Tensor:
    """The rectified-flow loss on packed latents for one batch of cached images, each
    caption replaced by the empty one (the prompt tensors' last row) with probability
    `caption_dropout`.

    Noise, times and dropout come from a CPU generator seeded by `step_seed` (the same
    numbers on any device, so a resumed run is bit-identical), then move to the cache's
    device."""
    from diffusers import FluxPipeline

    generator = torch.Generator().manual_seed(step_seed)
    x0 = cache["latents"][rows.to(cache["latents"].device)]
    batch, channels, height, width = x0.shape
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    sigmas = sample_sigmas(cfg.generator.timestep_sampling, batch, generator).to(x0.device)
    noisy = (1 - sigmas.view(-1, 1, 1, 1)) * x0 + sigmas.view(-1, 1, 1, 1) * noise
    prompts = cache["prompt_index"][rows.to(cache["prompt_index"].device)]
    if caption_dropout > 0:
        dropped = torch.rand(batch, generator=generator) < caption_dropout
        empty = len(cache["prompt_embeds"]) - 1
        prompts = torch.where(dropped.to(prompts.device), empty, prompts)
    device, dtype = transformer.device, transformer.dtype
    guidance = None
    if transformer.config.guidance_embeds:
        guidance = torch.full((batch,), cfg.generator.guidance_scale, device=device)
    text = cache["prompt_embeds"][prompts]
    prediction = transformer(
        hidden_states=FluxPipeline._pack_latents(noisy, batch, channels, height, width).to(
            device, dtype
        ),
        timestep=sigmas.to(device, dtype),
        guidance=guidance,
        pooled_projections=cache["pooled_prompt_embeds"][prompts].to(device, dtype),
        encoder_hidden_states=text.to(device, dtype),
        txt_ids=torch.zeros(text.shape[1], 3, device=device, dtype=dtype),
        img_ids=FluxPipeline._prepare_latent_image_ids(
            batch, height // 2, width // 2, device, dtype
        ),
        return_dict=False,
    )[0]
    target = FluxPipeline._pack_latents(noise - x0, batch, channels, height, width)
    return torch.nn.functional.mse_loss(prediction.float(), target.to(device).float())


def lora_targets(transformer, suffixes: list[str]) -> list[str]:
    """The full names of the modules inside the double- and single-stream blocks that end in
    one of `suffixes`. (peft matches a bare suffix anywhere: `proj_out` would also catch the
    transformer's final output projection, which FLUX LoRAs leave alone.)"""
    blocks = ("transformer_blocks.", "single_transformer_blocks.")
    names = [
        name
        for name, _ in transformer.named_modules()
        if name.startswith(blocks) and any(name.endswith(f".{s}") for s in suffixes)
    ]
    if not names:
        raise ValueError(
            f"generator.lora.target_modules {suffixes} match no module of the transformer's "
            "blocks; use names such as attn.to_q, ff.net.2, proj_mlp"
        )
    return names


@dataclass(frozen=True)
class Plan:
    """How many steps: every image `repeats` times per epoch, in batches."""

    n_images: int
    repeats: int
    batch_size: int
    epochs: int

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n_images * self.repeats / self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def order(self, seed: int, epoch: int) -> list[torch.Tensor]:
        """The batches of epoch `epoch`: each image `repeats` times, shuffled by (seed, epoch)."""
        visits = torch.arange(self.n_images).repeat(self.repeats)
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        return list(visits[torch.randperm(len(visits), generator=generator)].split(self.batch_size))


def _save_lora(transformer, folder: Path) -> Path:
    """The LoRA as `FluxPipeline.load_lora_weights` reads it: peft's state dict under the
    `transformer.` prefix, with the adapter's config (rank, alpha, targets) as metadata, so
    the loader scales it by alpha / rank as training did. (Converting it to the older
    diffusers `lora.down/up` naming would make the loader drop every attention
    projection; leaving out the metadata makes it assume alpha = rank: both tested.)"""
    from diffusers import FluxPipeline
    from peft.utils import get_peft_model_state_dict

    layers = get_peft_model_state_dict(transformer)
    tmp = folder / ".weights-tmp"
    FluxPipeline.save_lora_weights(
        tmp,
        transformer_lora_layers=layers,
        transformer_lora_adapter_metadata=transformer.peft_config["default"].to_dict(),
    )
    (tmp / WEIGHTS).replace(folder / WEIGHTS)
    tmp.rmdir()
    return folder / WEIGHTS


def _checkpoint(path: Path, transformer, optimizer, scheduler, step: int, losses: list) -> None:
    from peft.utils import get_peft_model_state_dict

    buffer = io.BytesIO()
    torch.save(
        {
            "lora": get_peft_model_state_dict(transformer),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "losses": losses,
        },
        buffer,
    )
    atomic_write_bytes(path, buffer.getvalue())


def _make_optimizer(cfg: StudyConfig, params: list[torch.nn.Parameter]):
    g = cfg.generator
    if g.optimizer == "prodigy":
        from prodigyopt import Prodigy

        return Prodigy(
            params,
            lr=g.learning_rate,
            weight_decay=g.weight_decay,
            safeguard_warmup=g.lr_warmup_steps > 0,
            use_bias_correction=True,
        )
    return torch.optim.AdamW(params, lr=g.learning_rate, weight_decay=g.weight_decay)


def sample_grid(
    pipe, cfg: StudyConfig, cache: dict[str, torch.Tensor], seed: int = 0
) -> Image.Image:
    """One image per class (the first 8) with the current weights, side by side, from the
    cached prompt embeddings (the text encoders are not loaded again).

    The latents are decoded here, cast to the VAE's dtype: under mixed precision the
    trained transformer returns fp32 (accelerate's autocast wrapper), which the
    pipeline's own decode would hand to a bf16 VAE."""
    from diffusers import FluxPipeline

    shown = min(8, len(cache["prompt_embeds"]) - 1)  # the last row is the empty prompt
    size = cfg.generator.resolution
    vae = pipe.vae
    empty = {
        "negative_prompt_embeds": cache["prompt_embeds"][-1:].expand(shown, -1, -1),
        "negative_pooled_prompt_embeds": cache["pooled_prompt_embeds"][-1:].expand(shown, -1),
    }
    latents = pipe(
        prompt_embeds=cache["prompt_embeds"][:shown].to(vae.dtype),
        pooled_prompt_embeds=cache["pooled_prompt_embeds"][:shown].to(vae.dtype),
        true_cfg_scale=cfg.generation.true_cfg_scale,
        **{k: v.to(vae.dtype) for k, v in empty.items()},
        height=size,
        width=size,
        num_inference_steps=cfg.generation.steps,
        guidance_scale=cfg.generation.guidance_scale,
        max_sequence_length=cfg.generator.max_sequence_length,
        generator=[torch.Generator().manual_seed(seed + i) for i in range(shown)],
        output_type="latent",
    ).images
    latents = FluxPipeline._unpack_latents(latents, size, size, pipe.vae_scale_factor)
    latents = latents / vae.config.scaling_factor + vae.config.shift_factor
    pixels = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    images = pipe.image_processor.postprocess(pixels, output_type="pil")
    grid = Image.new("RGB", (size * len(images), size))
    for i, image in enumerate(images):
        grid.paste(image, (i * size, 0))
    return grid


def build_encoding_cache(
    cfg: StudyConfig,
    source: str,
    records: list,
    dtype: torch.dtype,
    device: torch.device,
    path: Path,
) -> None:
    """Encode the LoRA-training images and prompts with the VAE and text encoders alone
    (the transformer is not loaded), write the tensors to `path`, then free the encoders."""
    from diffusers.training_utils import free_memory

    pipe = load_flux_pipeline(source, dtype, transformer=None).to(device)
    loader = ImageLoader(cfg.dataset)
    cache = encode_training_set(cfg, pipe, [r.label for r in records], [loader(r) for r in records])
    atomic_write_bytes(path, save({k: v.cpu().contiguous() for k, v in cache.items()}))
    del pipe, cache
    free_memory()


def lora_key(cfg: StudyConfig) -> str:
    """Identifies the settings a LoRA was trained with."""
    return config_hash(
        cfg.generator,
        cfg.generation.prompt_template,
        PROMPT_WORDS,
        cfg.splits.model_dump(mode="json"),
    )


def is_trained(cfg: StudyConfig) -> bool:
    """A finished LoRA with the current settings is on disk."""
    summary = lora_dir(cfg) / "summary.json"
    return (
        summary.exists()
        and (lora_dir(cfg) / WEIGHTS).exists()
        and json.loads(summary.read_text())["config_hash"] == lora_key(cfg)
    )


def train_lora(cfg: StudyConfig, stop_after: int | None = None) -> dict:
    """Notebook 01's one call: cache encodings, train (or resume) the LoRA, save it.

    `stop_after` ends the run after that many optimizer steps (as a kill would, after a
    checkpoint), for resume tests and budgeted runs; rerunning continues from there.
    """
    from peft import LoraConfig

    out = lora_dir(cfg)
    g = cfg.generator
    key = lora_key(cfg)
    summary_path = out / "summary.json"
    if is_trained(cfg):
        return json.loads(summary_path.read_text())
    meta = out / "config.json"
    if meta.exists() and json.loads(meta.read_text())["config_hash"] != key:
        raise RuntimeError(
            f"{out} holds a LoRA trained with other settings; give the study a "
            "new `name` (or delete that folder) to train again"
        )
    write_json(meta, {"config_hash": key, "generator": g.model_dump(mode="json")})

    manifest = prepare_data(cfg)
    records = manifest.split("lora")
    source = base_model_source(cfg)
    accelerator = make_accelerator(g.mixed_precision)
    dtype = weight_dtype(g.mixed_precision)

    cache_path = out / "cache.safetensors"
    bench: dict[str, float] = {}
    if not cache_path.exists():
        start = time.perf_counter()
        build_encoding_cache(cfg, source, records, dtype, accelerator.device, cache_path)
        bench["cache_s"] = time.perf_counter() - start
    cache = load_file(str(cache_path))

    from diffusers import FluxTransformer2DModel
    from diffusers.training_utils import cast_training_params

    transformer = FluxTransformer2DModel.from_pretrained(
        source, subfolder="transformer", dtype=dtype
    )
    transformer.requires_grad_(False)
    torch.manual_seed(g.seed)  # the LoRA's initial A matrices
    transformer.add_adapter(
        LoraConfig(
            r=g.lora.rank,
            lora_alpha=g.lora.alpha,
            lora_dropout=g.lora.dropout,
            init_lora_weights="gaussian",
            target_modules=lora_targets(transformer, g.lora.target_modules),
        )
    )
    cast_training_params(transformer, torch.float32)  # LoRA weights in fp32 under autocast
    params = [p for p in transformer.parameters() if p.requires_grad]
    if g.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    optimizer = _make_optimizer(cfg, params)
    plan = Plan(len(records), g.repeats, g.batch_size, g.epochs)
    from diffusers.optimization import get_scheduler

    scheduler = get_scheduler(
        g.lr_scheduler,
        optimizer,
        num_warmup_steps=g.lr_warmup_steps,
        num_training_steps=plan.total_steps,
    )
    checkpoint_path = out / "checkpoint.pt"
    step, losses = 0, []
    if checkpoint_path.exists():
        from peft.utils import set_peft_model_state_dict

        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        set_peft_model_state_dict(transformer, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, losses = state["step"], state["losses"]
        log.info("resuming LoRA training at step %d of %d", step, plan.total_steps)
    transformer, optimizer, scheduler = accelerator.prepare(transformer, optimizer, scheduler)
    cache = {k: v.to(accelerator.device) for k, v in cache.items()}

    sampler = None  # the pipeline of the sample grids, without text encoders; built once
    train_start, first_step = time.perf_counter(), step
    transformer.train()
    progress = tqdm(total=plan.total_steps, initial=step, desc="LoRA", unit="step")
    epoch = step // plan.steps_per_epoch
    while step < plan.total_steps:
        batches = plan.order(g.seed, epoch)
        for rows in batches[step - epoch * plan.steps_per_epoch :]:
            torch.manual_seed(g.seed * 1_000_003 + step)  # LoRA dropout, if any
            loss = flow_matching_loss(
                transformer, cache, rows, g.seed * 1_000_003 + step, cfg, g.caption_dropout
            )
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append([epoch + 1, step + 1, loss.item(), len(rows)])
            step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.4f}")
            stopping = stop_after is not None and step - first_step >= stop_after
            if stopping or step % g.checkpoint_every == 0 or step == plan.total_steps:
                _checkpoint(
                    checkpoint_path,
                    accelerator.unwrap_model(transformer),
                    optimizer,
                    scheduler,
                    step,
                    losses,
                )
            if stopping:
                progress.close()
                return {"stopped_at": step, "total_steps": plan.total_steps}
        epoch += 1
        if sampler is None:
            sampler = load_flux_pipeline(
                source,
                dtype,
                transformer=accelerator.unwrap_model(transformer),
                text_encoder=None,
                text_encoder_2=None,
                tokenizer=None,
                tokenizer_2=None,
            ).to(accelerator.device)
        _write_epoch_outputs(cfg, out, sampler, cache, losses, epoch)
    progress.close()
    train_s = time.perf_counter() - train_start
    weights = _save_lora(accelerator.unwrap_model(transformer), out)
    samples_seen = sum(row[3] for row in losses[first_step:])
    bench.update({"train_s": train_s, "samples_per_s": samples_seen / max(train_s, 1e-9)})
    summary = {
        "config_hash": key,
        "weights": str(weights),
        "base_model": source,
        "device": str(accelerator.device),
        "mixed_precision": g.mixed_precision,
        "gradient_checkpointing": g.gradient_checkpointing,
        "steps": plan.total_steps,
        "n_images": len(records),
        "epochs": g.epochs,
        "repeats": g.repeats,
        "bench": bench,
        "epoch_loss": _epoch_means(losses),
    }
    write_json(out / "bench.json", bench)
    write_json(summary_path, summary)
    print(
        f"LoRA: {plan.total_steps} steps, {bench['samples_per_s']:.2f} samples/s"
        + (f", encoding cache built in {bench['cache_s']:.1f}s" if "cache_s" in bench else "")
    )
    return summary


def _epoch_means(losses: list) -> list[dict]:
    by_epoch: dict[int, list[float]] = {}
    for epoch, _step, loss, _n in losses:
        by_epoch.setdefault(epoch, []).append(loss)
    return [
        {"epoch": e, "loss": sum(v) / len(v), "steps": len(v)} for e, v in sorted(by_epoch.items())
    ]


def _write_epoch_outputs(
    cfg: StudyConfig,
    out: Path,
    sampler,
    cache: dict[str, torch.Tensor],
    losses: list,
    epoch: int,
) -> None:
    """The per-step loss log and this epoch's sample grid (users pick an epoch by eye)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["epoch", "step", "loss", "batch_size"])
    writer.writerows(losses)
    atomic_write_text(out / "loss.csv", buffer.getvalue())
    transformer = sampler.transformer
    transformer.eval()
    with torch.no_grad():
        grid = sample_grid(sampler, cfg, cache)
    transformer.train()
    png = io.BytesIO()
    grid.save(png, format="PNG")
    atomic_write_bytes(out / "samples" / f"epoch_{epoch:03d}.png", png.getvalue())
