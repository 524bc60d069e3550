"""Stage 1: one LoRA on the base's transformer for all classes (the class name in each prompt).

The loop, step by step (the family-specific parts go through `synthaug.families`):
1. encode every LoRA-training image with the VAE and every prompt with the text encoders
   once, cache the tensors to disk, then free the VAE and the text encoders;
2. add a `peft` LoRA to the frozen transformer (FLUX.1's or FLUX.2 [klein]'s);
3. each epoch visits every image `repeats` times in a seeded shuffle; each step draws
   noise and a flow-matching time, and regresses the velocity `noise - latents` on the
   packed latents, as FLUX models are trained (rectified flow);
4. checkpoint every N steps (LoRA, optimizer, scheduler, step; safetensors, no pickle:
   `synthaug.checkpoint`), atomically; a restarted
   run resumes there and ends with the same LoRA as an uninterrupted one (the noise of
   step k is drawn from a generator seeded by (seed, k), the order of epoch e by (seed, e));
5. save `pytorch_lora_weights.safetensors` in the diffusers format, a per-epoch loss log
   and a grid of samples per epoch.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prodigyopt
import torch
from PIL import Image
from safetensors.torch import load_file, save

from synthaug.checkpoint import convert_legacy, load_checkpoint, save_checkpoint
from synthaug.config import StudyConfig, config_hash, identity
from synthaug.data import ImageLoader, prepare_data
from synthaug.families import GeneratorFamily, family_named
from synthaug.flow import encode_class_prompts, flow_matching_loss, step_seed
from synthaug.io import atomic_write_bytes, read_json, record_settings, write_csv, write_json
from synthaug.models import base_name, compute_devices, make_accelerator, weight_dtype
from synthaug.paths import LORA_WEIGHTS
from synthaug.pretrain import base_model_source
from synthaug.prodigy import Prodigy
from synthaug.runtime import provenance, tracking
from synthaug.runtime.compiling import compile_blocks
from synthaug.runtime.progress import Progress
from synthaug.vocab import PROMPT_WORDS

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.safetensors"  # LoRA, optimizer, scheduler, step and losses


def _to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    image = image.resize((size, size), Image.Resampling.BICUBIC)
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return pixels.view(size, size, 3).permute(2, 0, 1).float() / 127.5 - 1.0


@torch.no_grad()
def encode_training_set(
    cfg: StudyConfig, pipe, labels: list[str], images: list[Image.Image]
) -> dict[str, torch.Tensor]:
    """VAE latents (in the transformer's space: `to_model_space`) and text embeddings,
    once, on the device of the pipeline's encoders."""
    vae = pipe.vae
    family = family_named(cfg.generator.family)
    latents = []
    for start in range(0, len(images), 8):
        batch = torch.stack(
            [_to_tensor(im, cfg.generator.resolution) for im in images[start : start + 8]]
        ).to(vae.device, vae.dtype)
        latents.append(family.to_model_space(vae, vae.encode(batch).latent_dist.mode()))
    return {"latents": torch.cat(latents).float(), **encode_class_prompts(cfg, pipe, labels)}


def lora_targets(
    transformer, suffixes: list[str] | tuple[str, ...], blocks: tuple[str, ...] | None = None
) -> list[str]:
    """The full names of the linear layers inside the double- and single-stream blocks that
    end in one of `suffixes`. (peft matches a bare suffix anywhere: `proj_out` would also
    catch the transformer's final output projection, which FLUX LoRAs leave alone.)"""
    blocks = blocks or GeneratorFamily.lora_blocks
    names = [
        name
        for name, module in transformer.named_modules()
        if name.startswith(blocks)
        and isinstance(module, torch.nn.Linear)
        and any(name.endswith(f".{s}") for s in suffixes)
    ]
    if not names:
        raise ValueError(
            f"generator.lora.target_modules {suffixes} match no module of the transformer's "
            "blocks; use names such as attn.to_q, ff.net.2, proj_mlp"
        )
    return names


@dataclass(frozen=True)
class StepSchedule:
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


def _save_lora(family: GeneratorFamily, transformer, folder: Path) -> Path:
    """The LoRA as the family pipeline's `load_lora_weights` reads it: peft's state dict under the
    `transformer.` prefix, with the adapter's config (rank, alpha, targets) as metadata, so
    the loader scales it by alpha / rank as training did, and the same bytes in every
    process (peft keeps the targets in a set). (Converting it to the older
    diffusers `lora.down/up` naming would make the loader drop every attention
    projection; leaving out the metadata makes it assume alpha = rank: both tested.)"""
    # deferred: peft is imported only by the LoRA's stages
    from peft.utils import get_peft_model_state_dict

    layers = get_peft_model_state_dict(transformer)
    metadata = transformer.peft_config["default"].to_dict()
    metadata["target_modules"] = sorted(metadata["target_modules"])  # a set: hash-ordered
    tmp = folder / ".weights-tmp"
    family.save_lora(tmp, layers, metadata)
    (tmp / LORA_WEIGHTS).replace(folder / LORA_WEIGHTS)
    tmp.rmdir()
    return folder / LORA_WEIGHTS


def _read_checkpoint(out: Path) -> dict | None:
    """The run's checkpoint (an older pickled `checkpoint.pt` converted first), or None."""
    path = out / CHECKPOINT
    if not path.exists() and (out / "checkpoint.pt").exists():
        convert_legacy(out / "checkpoint.pt", path)
    return load_checkpoint(path) if path.exists() else None


def _make_optimizer(cfg: StudyConfig, params: list[torch.nn.Parameter]):
    g = cfg.generator
    if g.optimizer in ("prodigy", "prodigy_reference"):
        prodigy = Prodigy if g.optimizer == "prodigy" else prodigyopt.Prodigy
        return prodigy(
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
    family = family_named(cfg.generator.family)
    shown = min(8, len(cache["prompt_embeds"]) - 1)  # the last row is the empty prompt
    size = cfg.generator.resolution
    vae = pipe.vae
    text = {key: cache[key][:shown] for key in family.text_keys}
    empty = {key: cache[key][-1:].expand(shown, *cache[key].shape[1:]) for key in family.text_keys}
    generators = [torch.Generator().manual_seed(seed + i) for i in range(shown)]
    latents = family.sample_latents(pipe, cfg, text, empty, generators)
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
    # deferred: diffusers takes seconds to import; only the generator's stages need it
    from diffusers.training_utils import free_memory

    family = family_named(cfg.generator.family)
    pipe = family.load_pipeline(source, dtype, transformer=None).to(device)
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
    summary = cfg.paths.lora_summary
    return (
        summary.exists()
        and cfg.paths.lora_weights.exists()
        and read_json(summary)["config_hash"] == lora_key(cfg)
    )


def train_lora(cfg: StudyConfig, stop_after: int | None = None) -> dict:
    """Notebook 01's one call: cache encodings, train (or resume) the LoRA, save it.

    `stop_after` ends the run after that many optimizer steps (as a kill would, after a
    checkpoint), for resume tests and budgeted runs; rerunning continues from there.
    """
    if is_trained(cfg):
        return read_json(cfg.paths.lora_summary)
    records, source = _record_and_locate(cfg)
    devices = lora_devices(cfg)
    if len(devices) > 1 and "WORLD_SIZE" not in os.environ:
        return launch(cfg, devices, stop_after)
    run = _prepare(cfg, records, source)
    _resume(run)
    _start(run)
    while run.step < run.schedule.total_steps:
        if _one_epoch(run, stop_after):
            return {"stopped_at": run.step, "total_steps": run.schedule.total_steps}
        _end_of_epoch(run)
    return _finish(run)


@dataclass
class _Run:
    """One process's LoRA training: what the phases of `train_lora` share."""

    cfg: StudyConfig
    family: GeneratorFamily
    accelerator: Any
    source: str
    n_images: int
    cache: dict[str, torch.Tensor]
    transformer: Any
    optimizer: Any
    scheduler: Any
    schedule: StepSchedule
    bench: dict[str, float]
    step: int = 0
    losses: list = field(default_factory=list)
    first_step: int = 0
    started: float = 0.0
    sampler: Any = None  # the pipeline of the sample grids, without text encoders
    progress: Progress | None = None

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def part(self) -> tuple[int, int]:
        return self.accelerator.process_index, self.accelerator.num_processes


def _record_and_locate(cfg: StudyConfig) -> tuple[list, str]:
    """Record the settings (refusing other ones) and provenance; the LoRA-training
    records and the base, pretrained here once, before any process starts."""
    out = cfg.paths.lora
    settings = {"config_hash": lora_key(cfg), "generator": identity(cfg.generator)}
    record_settings(out / "config.json", settings, str(out))
    if "LOCAL_RANK" not in os.environ:  # the launching process records, not each worker
        provenance.record(cfg, "01_lora")
    records = prepare_data(cfg).split("lora")
    return records, base_model_source(cfg)


def _prepare(cfg: StudyConfig, records: list, source: str) -> _Run:
    """The accelerator, the encoding cache, the transformer with its LoRA, the optimizer
    and the learning-rate schedule."""
    # deferred: diffusers takes seconds to import; only the generator's stages need it
    from diffusers.optimization import get_scheduler

    g = cfg.generator
    accelerator = make_accelerator(
        g.mixed_precision, **tracking.accelerator_options(g.report_to, cfg.paths.lora)
    )
    if g.batch_size % accelerator.num_processes:
        raise ValueError(
            f"generator.batch_size {g.batch_size} does not split over "
            f"{accelerator.num_processes} processes; use a multiple of the number of devices "
            "(study.devices)"
        )
    bench: dict[str, float] = {}
    cache = _encoding_cache(cfg, accelerator, source, records, bench)
    family = family_named(g.family)
    transformer = _transformer_with_lora(cfg, family, source)
    optimizer = _make_optimizer(cfg, [p for p in transformer.parameters() if p.requires_grad])
    schedule = StepSchedule(len(records), g.repeats, g.batch_size, g.epochs)
    scheduler = get_scheduler(
        g.lr_scheduler,
        optimizer,
        num_warmup_steps=g.lr_warmup_steps,
        num_training_steps=schedule.total_steps,
    )
    return _Run(
        cfg,
        family,
        accelerator,
        source,
        len(records),
        cache,
        transformer,
        optimizer,
        scheduler,
        schedule,
        bench,
    )


def _encoding_cache(cfg: StudyConfig, accelerator, source: str, records, bench: dict) -> dict:
    """The VAE latents and prompt tensors, built once by the first process."""
    path = cfg.paths.lora / "cache.safetensors"
    dtype = weight_dtype(cfg.generator.mixed_precision)
    with accelerator.main_process_first():  # the others read the cache the first one made
        if not path.exists():
            start = time.perf_counter()
            build_encoding_cache(cfg, source, records, dtype, accelerator.device, path)
            bench["cache_s"] = time.perf_counter() - start
    return load_file(str(path))


def _transformer_with_lora(cfg: StudyConfig, family: GeneratorFamily, source: str):
    """The frozen transformer with the LoRA added (its A matrices seeded by
    `generator.seed`) in fp32, checkpointing and compilation as the config says."""
    # deferred: diffusers takes seconds to import; only the generator's stages need it
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    g = cfg.generator
    transformer = family.load_transformer(source, weight_dtype(g.mixed_precision))
    transformer.requires_grad_(False)
    torch.manual_seed(g.seed)  # the LoRA's initial A matrices
    targets = lora_targets(transformer, family.targets(g.lora.target_modules), family.lora_blocks)
    transformer.add_adapter(
        LoraConfig(
            r=g.lora.rank,
            lora_alpha=g.lora.alpha,
            lora_dropout=g.lora.dropout,
            init_lora_weights="gaussian",
            target_modules=targets,
        )
    )
    cast_training_params(transformer, torch.float32)  # LoRA weights in fp32 under autocast
    if g.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    compile_blocks(transformer, g.compile)  # the LoRA layers are inside the blocks
    return transformer


def _resume(run: _Run) -> None:
    """Continue from the run's checkpoint, if it has one."""
    if (state := _read_checkpoint(run.cfg.paths.lora)) is None:
        return
    # deferred: peft is imported only by the LoRA's stages
    from peft.utils import set_peft_model_state_dict

    set_peft_model_state_dict(run.transformer, state["lora"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.step, run.losses = state["step"], state["losses"]
    log.info("resuming LoRA training at step %d of %d", run.step, run.schedule.total_steps)


def _start(run: _Run) -> None:
    """Hand the model, optimizer and schedule to accelerate; move the cache; open the
    trackers and the progress line."""
    accelerator, g = run.accelerator, run.cfg.generator
    run.transformer, run.optimizer, run.scheduler = accelerator.prepare(
        run.transformer, run.optimizer, run.scheduler
    )
    run.cache = {k: v.to(accelerator.device) for k, v in run.cache.items()}
    tracking.start(accelerator, g.report_to, identity(g))
    run.started, run.first_step = time.perf_counter(), run.step
    run.transformer.train()
    total = run.schedule.total_steps
    run.progress = Progress(total, "LoRA", "steps", initial=run.step, show=run.main)


def _one_epoch(run: _Run, stop_after: int | None) -> bool:
    """The rest of the current epoch's steps, checkpointing on the way; True when the
    run stops early (`stop_after`)."""
    g, schedule = run.cfg.generator, run.schedule
    epoch = run.step // schedule.steps_per_epoch
    for rows in schedule.order(g.seed, epoch)[run.step - epoch * schedule.steps_per_epoch :]:
        batch_loss = _step(run, rows, epoch)
        run.progress.update(1, epoch=f"{epoch + 1}/{g.epochs}", loss=f"{batch_loss:.4f}")
        stopping = stop_after is not None and run.step - run.first_step >= stop_after
        if stopping or run.step % g.checkpoint_every == 0 or run.step == schedule.total_steps:
            _save_checkpoint(run)
        if stopping:
            run.progress.close()
            tracking.finish(run.accelerator, g.report_to)
            return True
    return False


def _step(run: _Run, rows: torch.Tensor, epoch: int) -> float:
    """One optimizer step on the batch `rows`; its loss, averaged over processes."""
    g, accelerator = run.cfg.generator, run.accelerator
    seed = step_seed(g.seed, run.step)
    torch.manual_seed(seed)  # LoRA dropout, if any
    loss = flow_matching_loss(
        run.transformer, run.cache, rows, seed, run.cfg, g.caption_dropout, run.part
    )
    accelerator.backward(loss)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad()
    batch_loss = accelerator.reduce(loss.detach(), "mean").item()  # over processes
    run.losses.append([epoch + 1, run.step + 1, batch_loss, len(rows)])
    run.step += 1
    learning_rate = run.scheduler.get_last_lr()[0]
    tracking.log_step(accelerator, g.report_to, run.step, batch_loss, learning_rate)
    return batch_loss


def _save_checkpoint(run: _Run) -> None:
    """The LoRA, optimizer, schedule, step and losses (the first process writes them)."""
    # deferred: peft is imported only by the LoRA's stages
    from peft.utils import get_peft_model_state_dict

    if run.main:
        state = {
            "lora": get_peft_model_state_dict(run.accelerator.unwrap_model(run.transformer)),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "step": run.step,
            "losses": run.losses,
        }
        save_checkpoint(run.cfg.paths.lora / CHECKPOINT, state)
    run.accelerator.wait_for_everyone()


def _end_of_epoch(run: _Run) -> None:
    """The first process writes the loss log and the epoch's sample grid."""
    if not run.main:
        return
    if run.sampler is None:
        family = run.family
        run.sampler = family.load_pipeline(
            run.source,
            weight_dtype(run.cfg.generator.mixed_precision),
            transformer=run.accelerator.unwrap_model(run.transformer),
            **family.without_text_encoders(),
        ).to(run.accelerator.device)
    epoch = run.step // run.schedule.steps_per_epoch
    grid = _write_epoch_outputs(
        run.cfg, run.cfg.paths.lora, run.sampler, run.cache, run.losses, epoch
    )
    tracking.log_grid(run.accelerator, run.cfg.generator.report_to, run.step, grid)


def _finish(run: _Run) -> dict:
    """Save the LoRA and the run's summary (the first process; the others wait for it)."""
    cfg, g, accelerator = run.cfg, run.cfg.generator, run.accelerator
    run.progress.close()
    tracking.finish(accelerator, g.report_to)
    train_s = time.perf_counter() - run.started
    if not run.main:
        accelerator.wait_for_everyone()  # the first process saves the LoRA and its summary
        return read_json(cfg.paths.lora_summary)
    weights = _save_lora(run.family, accelerator.unwrap_model(run.transformer), cfg.paths.lora)
    samples_seen = sum(row[3] for row in run.losses[run.first_step :])
    bench = run.bench
    bench.update({"train_s": train_s, "samples_per_s": samples_seen / max(train_s, 1e-9)})
    summary = {
        "config_hash": lora_key(cfg),
        "weights": str(weights),
        "family": g.family,
        "base_model": base_name(run.source),
        "device": str(accelerator.device),
        "processes": run.part[1],
        "mixed_precision": g.mixed_precision,
        "gradient_checkpointing": g.gradient_checkpointing,
        "steps": run.schedule.total_steps,
        "n_images": run.n_images,
        "epochs": g.epochs,
        "repeats": g.repeats,
        "bench": bench,
        "epoch_loss": _epoch_means(run.losses),
    }
    write_json(cfg.paths.lora / "bench.json", bench)
    write_json(cfg.paths.lora_summary, summary)
    accelerator.wait_for_everyone()
    print(
        f"LoRA: {run.schedule.total_steps} steps, {bench['samples_per_s']:.2f} samples/s"
        + (f", encoding cache built in {bench['cache_s']:.1f}s" if "cache_s" in bench else "")
    )
    return summary


def lora_devices(cfg: StudyConfig) -> list[str | None]:
    """The study's devices that the LoRA trains on: as many as split its batch evenly (each
    process takes an equal share of every batch). A batch of 1, the paper's, trains on one
    GPU, while generation and the classifier cells still spread over all of them."""
    devices = compute_devices(cfg.study.devices)
    batch = cfg.generator.batch_size
    count = max(n for n in range(1, len(devices) + 1) if batch % n == 0)
    if count < len(devices):
        log.info(
            "generator.batch_size %d splits evenly over %d of the %d devices: the LoRA "
            "trains on those",
            batch,
            count,
            len(devices),
        )
    return devices[:count]


def launch(cfg: StudyConfig, devices: list[str | None], stop_after: int | None) -> dict:
    """Train the LoRA in one data-parallel process per device (torch's launcher; NCCL on
    GPUs, gloo on a CPU): each takes its share of every batch, so the effective batch, the
    samples seen and the per-epoch shuffle are the config's; resume works as in one."""
    spec = cfg.paths.lora / "launch.json"
    write_json(spec, {**cfg.model_dump(mode="json"), "output_dir": str(cfg.run_dir.parent)})
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={len(devices)}",
        "-m",
        "synthaug.lora",
        str(spec),
        *(["--stop-after", str(stop_after)] if stop_after is not None else []),
    ]
    env = dict(os.environ)
    if devices[0] is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(d for d in devices if d is not None)
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"the {len(devices)}-process LoRA failed:\n{result.stderr[-4000:]}\n"
            "its checkpoint is kept; rerun to continue"
        )
    if stop_after is not None:
        return {"processes": len(devices), "stopped": True}
    return read_json(cfg.paths.lora_summary)


def main(argv: list[str] | None = None) -> None:
    """One process of `launch`: `python -m synthaug.lora <config.json> [--stop-after N]`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("config")
    parser.add_argument("--stop-after", type=int, default=None)
    args = parser.parse_args(argv)
    train_lora(StudyConfig.model_validate(read_json(args.config)), args.stop_after)


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
) -> Image.Image:
    """The per-step loss log and this epoch's sample grid (users pick an epoch by eye);
    returns the grid."""
    write_csv(out / "loss.csv", ["epoch", "step", "loss", "batch_size"], losses)
    transformer = sampler.transformer
    transformer.eval()
    with torch.no_grad():
        grid = sample_grid(sampler, cfg, cache)
    transformer.train()
    png = io.BytesIO()
    grid.save(png, format="PNG")
    atomic_write_bytes(out / "samples" / f"epoch_{epoch:03d}.png", png.getvalue())
    return grid


if __name__ == "__main__":
    main()
