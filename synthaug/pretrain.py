"""The base model every LoRA adapts: a hub id or folder, or the tiny pipeline, pretrained.

FLUX.1-dev (like FLUX.2 [klein]) was pretrained on billions of images before the paper's
LoRA adapted it to PatternNet. A randomly initialised tiny pipeline knows nothing, so the
CPU profiles first pretrain it on real aerial images (AID, 30 classes, class names as
captions): the VAE as an autoencoder (L1 reconstruction + a small KL term), then its
latent normalisation is measured as the family's is (FLUX.1: one shift and scale to unit
variance; FLUX.2: the VAE's batch-norm statistics per channel), then the transformer (and,
if the profile says so, the tiny text encoders) learns with the same rectified-flow loss
the LoRA uses. The result is saved with `save_pretrained` and cached by its own settings
(`base_key`, nothing of the study's dataset), so every study on that base shares one copy.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthaug.checkpoint import load_checkpoint, save_checkpoint
from synthaug.config import TINY, StudyConfig, TinyFluxConfig, config_hash
from synthaug.data import decode_image, open_source
from synthaug.families import family_named
from synthaug.flow import flow_matching_loss, step_seed
from synthaug.io import build_once, write_json
from synthaug.models import TOKENIZERS_VERSION, cache_root
from synthaug.runtime.progress import Progress
from synthaug.runtime.provenance import cpu_model
from synthaug.sources import local_model, locate
from synthaug.vocab import caption_words

log = logging.getLogger(__name__)
# Part of the base's cache key: bump it when the pretraining procedure itself changes.
PRETRAINING_VERSION = "warmup-cosine-coarse-l1-v2"
# Seconds between pretraining checkpoints: a stopped pretraining loses at most this much.
CHECKPOINT_SECONDS = 180.0


class Resume:
    """A pretraining's checkpoint file: the phase, its step, the modules, optimizer,
    schedule and random generator, and the losses so far; written atomically every
    `every` seconds (and at the end of each phase), so a stopped pretraining resumes
    where it was and ends with the same weights as one that never stopped."""

    def __init__(self, path: Path) -> None:
        self.path, self.every = path, CHECKPOINT_SECONDS
        self.started = self.saved_at = time.perf_counter()
        self.state = load_checkpoint(path) if path.exists() else {}
        if self.state:
            log.warning("resuming the base's pretraining from %s", path)

    def seconds(self) -> float:
        """Pretraining seconds so far, over every sitting."""
        return self.state.get("seconds", 0.0) + time.perf_counter() - self.started

    def phase(self, name: str) -> dict | None:
        """The saved state of phase `name`, if the checkpoint holds it."""
        return self.state.get(name)

    def save_if_due(self, name: str, training: _Training, steps: int) -> None:
        """Save phase `name` when `every` seconds have passed, or at the last of its
        `steps`."""
        if training.step == steps or time.perf_counter() - self.saved_at >= self.every:
            self.state[name] = training.state()
            save_checkpoint(self.path, self.state | {"seconds": self.seconds()})
            self.saved_at = time.perf_counter()


@dataclass(frozen=True)
class _Training:
    """What a phase's checkpoint holds after `step` of its steps; `state()` reads it out."""

    modules: dict
    optimizer: Any
    schedule: Any
    generator: torch.Generator
    losses: list[float]
    step: int

    def state(self) -> dict:
        return {
            # copies: tied weights (T5's embeddings) share memory, which safetensors refuses
            "modules": {
                name: {key: value.clone() for key, value in module.state_dict().items()}
                for name, module in self.modules.items()
            },
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "generator": self.generator.get_state(),
            "global_generator": torch.get_rng_state(),  # the text encoders' dropout draws from it
            "losses": list(self.losses),
            "step": self.step,
        }


def _restore(state: dict, modules: dict, optimizer, schedule, generator) -> tuple[list, int]:
    """Load a phase's saved state; its losses and the step to continue from."""
    for name, module in modules.items():
        module.load_state_dict(state["modules"][name])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["global_generator"])
    return list(state["losses"]), state["step"]


def tiny_base_dir(family: str, cfg: TinyFluxConfig) -> Path:
    """Build (once, cached by family and config) and save the family's tiny pipeline."""
    target = cache_root() / f"tiny-{family}-{config_hash(cfg, TOKENIZERS_VERSION)}"
    return build_once(
        target, lambda tmp: family_named(family).tiny_pipeline(cfg).save_pretrained(tmp)
    )


def load_images(cfg: StudyConfig) -> tuple[torch.Tensor, list[str], list[str]]:
    """Every pretraining image as uint8 (N, 3, R, R) at the generator's resolution."""
    pre = cfg.generator.pretrain
    assert pre is not None
    source = open_source(pre.data)
    size = cfg.generator.resolution
    arrays, labels = [], []
    for ref, label, data in source.scan():
        if pre.max_per_class and labels.count(label) >= pre.max_per_class:
            continue
        image = decode_image(data, size, ref)
        arrays.append(np.asarray(image, dtype=np.uint8))
        labels.append(label)
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return pixels, labels, source.classes


def _as_float(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 127.5 - 1.0


def warmup_cosine(optimizer, steps: int):
    """Linear warm-up over the first 3% of the steps, then cosine decay to zero."""
    # deferred: diffusers takes seconds to import; only the generator's stages need it
    from diffusers.optimization import get_scheduler

    return get_scheduler(
        "cosine", optimizer, num_warmup_steps=max(1, steps * 3 // 100), num_training_steps=steps
    )


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 at full resolution plus L1 of the images averaged to 1/8 of their side: the
    coarse term weighs colour and layout, which a short full-resolution L1 alone leaves
    washed out (fine texture dominates it)."""
    coarse = torch.nn.functional.avg_pool2d
    return (recon - x).abs().mean() + (coarse(recon, 8) - coarse(x, 8)).abs().mean()


def _step(loss: torch.Tensor, optimizer, schedule, losses: list[float], progress: Progress) -> None:
    """Backward, one optimizer and schedule step; the loss logged and shown."""
    loss.backward()
    optimizer.step()
    schedule.step()
    optimizer.zero_grad()
    losses.append(loss.item())
    progress.update(1, loss=f"{losses[-1]:.4f}")


def random_crop(images: torch.Tensor, size: int | None, generator: torch.Generator):
    """One random `size` x `size` window of a batch (N, C, H, W); the batch when None."""
    if size is None:
        return images
    height, width = images.shape[-2:]
    if size > min(height, width):
        raise ValueError(
            f"generator.pretrain.vae_crop {size} exceeds the {height}x{width} training images; "
            "use at most generator.resolution"
        )
    top, left = (
        int(torch.randint(n - size + 1, (1,), generator=generator)) for n in (height, width)
    )
    return images[..., top : top + size, left : left + size]


def train_vae(vae, pixels: torch.Tensor, cfg: StudyConfig, resume: Resume) -> list[float]:
    pre = cfg.generator.pretrain
    generator = torch.Generator().manual_seed(pre.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=pre.vae_learning_rate)
    schedule = warmup_cosine(optimizer, pre.vae_steps)
    modules, losses, first = {"vae": vae}, [], 0
    if saved := resume.phase("vae"):
        losses, first = _restore(saved, modules, optimizer, schedule, generator)
    vae.train()
    progress = Progress(pre.vae_steps, "pretraining the base: VAE", "steps", initial=first)
    for step in range(first, pre.vae_steps):
        rows = torch.randint(len(pixels), (pre.batch_size,), generator=generator)
        x = _as_float(random_crop(pixels[rows], pre.vae_crop, generator))
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=generator)).sample
        loss = reconstruction_loss(recon, x) + pre.kl_weight * posterior.kl().mean()
        _step(loss, optimizer, schedule, losses, progress)
        resume.save_if_due(
            "vae",
            _Training(modules, optimizer, schedule, generator, losses, step + 1),
            pre.vae_steps,
        )
    progress.close()
    vae.eval()
    return losses


@torch.no_grad()
def encode_all(vae, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    return torch.cat(
        [
            vae.encode(_as_float(pixels[i : i + batch_size])).latent_dist.mode()
            for i in range(0, len(pixels), batch_size)
        ]
    )


def captions(classes: list[str], template: str) -> list[str]:
    """Each pretraining class's caption: its folder name as words in the template."""
    return [template.format(class_name=caption_words(label)) for label in classes]


def train_transformer(
    pipe,
    latents: torch.Tensor,
    labels: list[str],
    classes: list[str],
    cfg: StudyConfig,
    resume: Resume,
) -> list[float]:
    """The transformer (and, if the profile says so, the text encoders) trained with the
    LoRA's rectified-flow loss, captions dropped to the empty one at `caption_dropout`."""
    pre = cfg.generator.pretrain
    family = family_named(cfg.generator.family)
    texts = captions(classes, pre.caption_template)
    max_length = cfg.generator.max_sequence_length
    index = {label: i for i, label in enumerate(classes)}
    cache = {"latents": latents, "prompt_index": torch.tensor([index[x] for x in labels])}
    encoders = family.text_encoders(pipe) if pre.train_text_encoders else []
    modules = {"transformer": pipe.transformer} | {
        f"text_encoder_{i}": encoder for i, encoder in enumerate(encoders)
    }
    params = [p for module in modules.values() for p in module.parameters()]
    optimizer = torch.optim.AdamW(params, lr=pre.transformer_learning_rate)
    schedule = warmup_cosine(optimizer, pre.transformer_steps)
    generator = torch.Generator().manual_seed(pre.seed + 1)
    losses, first = [], 0
    if saved := resume.phase("transformer"):
        losses, first = _restore(saved, modules, optimizer, schedule, generator)
    for module in modules.values():
        module.train()
    if not encoders:
        with torch.no_grad():
            fixed = family.encode_prompts(pipe, texts, max_length)
    progress = Progress(
        pre.transformer_steps, "pretraining the base: transformer", "steps", initial=first
    )
    for step in range(first, pre.transformer_steps):
        rows = torch.randint(len(latents), (pre.batch_size,), generator=generator)
        prompts = family.encode_prompts(pipe, texts, max_length) if encoders else fixed
        loss = flow_matching_loss(
            pipe.transformer,
            cache | prompts,
            rows,
            step_seed(pre.seed, step),
            cfg,
            pre.caption_dropout,
        )
        _step(loss, optimizer, schedule, losses, progress)
        resume.save_if_due(
            "transformer",
            _Training(modules, optimizer, schedule, generator, losses, step + 1),
            pre.transformer_steps,
        )
    progress.close()
    for module in modules.values():
        module.eval()
    return losses


def base_key(cfg: StudyConfig) -> str:
    """The pretrained base's identity: its architecture, tokenizers, pretraining data and
    settings, and the training settings its loss shares with the LoRA. Nothing of the
    study's dataset or prompts."""
    pre = cfg.generator.pretrain
    assert pre is not None
    g = cfg.generator
    return config_hash(
        g.tiny,
        g.family,
        TOKENIZERS_VERSION,
        PRETRAINING_VERSION,
        pre.model_dump(mode="json"),
        locate(pre.data).kind,  # a local copy and the hub's may differ (AID: 150 vs 600 px)
        g.resolution,
        g.max_sequence_length,
        g.timestep_sampling,
        g.guidance_scale,
    )


@contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """torch on `threads` CPU threads inside the block, as before after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def pretrained_base_dir(cfg: StudyConfig) -> str:
    """Pretrain (once, cached by `base_key`) and return the folder of the pretrained pipeline."""
    pre = cfg.generator.pretrain
    assert pre is not None

    def build(folder) -> None:
        with fixed_threads(pre.threads):
            pretrain_into(folder)

    def pretrain_into(folder) -> None:
        torch.manual_seed(pre.seed)
        resume = Resume(checkpoint)
        pixels, labels, classes = load_images(cfg)
        family = family_named(cfg.generator.family)
        pipe = family.tiny_pipeline(cfg.generator.tiny)
        # oneDNN's multi-threaded convolutions are not bit-reproducible beside another busy
        # process (1 of 8 pretrainings differed; bench/base_drift.py): the VAE on one thread
        with fixed_threads(1):
            vae_losses = train_vae(pipe.vae, pixels, cfg, resume)
            vae_s = resume.state["vae"].get("seconds") or resume.seconds()
            resume.state["vae"]["seconds"] = vae_s
            raw = encode_all(pipe.vae, pixels)
        latent_stats = family.fit_latent_stats(pipe.vae, raw)
        latents = family.to_model_space(pipe.vae, raw)
        tr_losses = train_transformer(pipe, latents, labels, classes, cfg, resume)
        pipe.save_pretrained(folder)
        seconds = resume.seconds()
        write_json(
            folder / "pretraining.json",
            {
                "images": len(labels),
                "classes": classes,
                "captions": captions(classes, pre.caption_template),
                "seconds": seconds,
                "machine": {
                    "cpu": cpu_model(),
                    "threads": pre.threads,
                    "torch": torch.__version__,
                    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                },
                "vae_seconds": vae_s,
                "transformer_seconds": seconds - vae_s,
                "vae_loss_first_last": [vae_losses[0], vae_losses[-1]],
                "transformer_loss_first_last": [tr_losses[0], tr_losses[-1]],
                **latent_stats,
                "vae_losses": vae_losses,
                "transformer_losses": tr_losses,
            },
        )
        log.info("pretrained the tiny base on %d images in %.0fs", len(labels), seconds)

    name = f"tiny-{cfg.generator.family}-pretrained-{base_key(cfg)}"
    checkpoint = cache_root() / f".{name}.checkpoint.safetensors"
    built = build_once(cache_root() / name, build)
    checkpoint.unlink(missing_ok=True)
    return str(built)


def base_model_source(cfg: StudyConfig) -> str:
    """The family's pipeline to adapt: the hub id / folder (`sources.local_model`: a shipped
    base is found from anywhere), or the tiny pipeline built
    locally (pretrained when the profile says so). It depends on the base's own settings only,
    never on the study's dataset: every study with the same base shares one cached copy."""
    if cfg.generator.base_model != TINY:
        folder = local_model(cfg.generator.base_model)
        return str(folder) if folder else cfg.generator.base_model
    if cfg.generator.pretrain is None:
        return str(tiny_base_dir(cfg.generator.family, cfg.generator.tiny))
    return pretrained_base_dir(cfg)
