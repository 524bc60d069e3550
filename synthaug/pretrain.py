"""The CPU profile's base model: the tiny FLUX-architecture pipeline pretrained on AID.

FLUX.1-dev was pretrained on billions of images before the paper's LoRA adapted it to
PatternNet. A randomly initialised tiny pipeline knows nothing, so for the CPU profile
`synthaug` first pretrains it on real aerial images (AID, 30 classes, class names as
prompts): the VAE as an autoencoder (L1 reconstruction + a small KL term), then its
latent scale and shift are measured as FLUX's are (unit variance), then the transformer
is fully trained with the same rectified-flow loss the LoRA uses. The text encoders stay
as built (random, frozen): the transformer learns to read their outputs. The result is
saved with `save_pretrained` and cached by its config, so later runs reuse it.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from synthaug.config import StudyConfig, config_hash, resolve_path
from synthaug.data import FolderSource, decode_image
from synthaug.io import write_json
from synthaug.models import build_once, cache_root, tiny_flux_pipeline
from synthaug.vocab import prompt_corpus

log = logging.getLogger(__name__)


def load_images(cfg: StudyConfig) -> tuple[torch.Tensor, list[str], list[str]]:
    """Every pretraining image as uint8 (N, 3, R, R) at the generator's resolution."""
    pre = cfg.generator.pretrain
    assert pre is not None
    source = FolderSource(resolve_path(pre.path), None)
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


def train_vae(vae, pixels: torch.Tensor, cfg: StudyConfig) -> list[float]:
    pre = cfg.generator.pretrain
    generator = torch.Generator().manual_seed(pre.seed)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=pre.vae_learning_rate)
    vae.train()
    losses = []
    for _ in tqdm(range(pre.vae_steps), desc="pretrain VAE", unit="step"):
        rows = torch.randint(len(pixels), (pre.batch_size,), generator=generator)
        x = _as_float(pixels[rows])
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=generator)).sample
        loss = (recon - x).abs().mean() + pre.kl_weight * posterior.kl().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
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


def train_transformer(
    pipe, latents: torch.Tensor, labels: list[str], classes: list[str], cfg: StudyConfig
) -> list[float]:
    from synthaug.lora import encode_prompts, flow_matching_loss

    pre = cfg.generator.pretrain
    cache = {"latents": latents, **encode_prompts(cfg, pipe, labels, classes)}
    transformer = pipe.transformer
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=pre.transformer_learning_rate)
    generator = torch.Generator().manual_seed(pre.seed + 1)
    transformer.train()
    losses = []
    for step in tqdm(range(pre.transformer_steps), desc="pretrain transformer", unit="step"):
        rows = torch.randint(len(latents), (pre.batch_size,), generator=generator)
        loss = flow_matching_loss(transformer, cache, rows, pre.seed * 1_000_003 + step, cfg)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    transformer.eval()
    return losses


def pretrained_base_dir(cfg: StudyConfig, study_classes: list[str]) -> str:
    """Pretrain (once, cached by config) and return the folder of the pretrained pipeline."""
    pre = cfg.generator.pretrain
    assert pre is not None
    key = config_hash(
        cfg.generator.tiny,
        pre.model_dump(mode="json"),
        study_classes,
        cfg.generator.resolution,
        cfg.generator.max_sequence_length,
        cfg.generator.timestep_sampling,
        cfg.generator.guidance_scale,
        cfg.generation.prompt_template,
    )

    def build(folder) -> None:
        torch.manual_seed(pre.seed)
        start = time.perf_counter()
        pixels, labels, classes = load_images(cfg)
        corpus = prompt_corpus(
            sorted(set(classes) | set(study_classes)), cfg.generation.prompt_template
        )
        pipe = tiny_flux_pipeline(cfg.generator.tiny, corpus)
        vae_losses = train_vae(pipe.vae, pixels, cfg)
        raw = encode_all(pipe.vae, pixels)
        shift, scale = raw.mean().item(), 1.0 / raw.std().item()
        pipe.vae.register_to_config(shift_factor=shift, scaling_factor=scale)
        tr_losses = train_transformer(pipe, (raw - shift) * scale, labels, classes, cfg)
        pipe.save_pretrained(folder)
        write_json(
            folder / "pretraining.json",
            {
                "images": len(labels),
                "classes": classes,
                "seconds": time.perf_counter() - start,
                "vae_loss_first_last": [vae_losses[0], vae_losses[-1]],
                "transformer_loss_first_last": [tr_losses[0], tr_losses[-1]],
                "latent_shift": shift,
                "latent_scale": scale,
                "vae_losses": vae_losses,
                "transformer_losses": tr_losses,
            },
        )
        log.info(
            "pretrained the tiny base on %d images in %.0fs",
            len(labels),
            time.perf_counter() - start,
        )

    return str(build_once(cache_root() / f"tiny-flux-pretrained-{key}", build))
