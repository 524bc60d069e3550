"""timm classifiers (`classifier.model: timm/<name>`), called as transformers' ones are.

`timm.create_model` builds the model with a new head of the study's classes and loads its
pretrained weights from the hub (`hf-hub:timm/<name>`) or from a folder timm saved
(`local-dir:`); the model's own data config gives the normalisation and input size.
`TimmClassifier` wraps it so that the classifier code, the feature hook and the quality
metrics see one interface: `model(pixel_values=...).logits` and the head as `.classifier`.
The tiny stand-in is a timm ViT built from `classifier.tiny` and saved with timm's
`save_for_hf`, loaded with `create_model("local-dir:...")` exactly as a hub checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from synthaug.config import TinyVitConfig, config_hash
from synthaug.io import build_once

TIMM_PREFIX = "timm/"
TINY_TIMM = "tiny-timm"
TINY_ARCHITECTURE = "vit_tiny_patch16_224"  # timm's ViT, resized by `classifier.tiny`


class TimmClassifier(nn.Module):
    """A timm model with transformers' calling convention (`pixel_values=` in, an output
    with `.logits` out) and its head exposed as `.classifier` (the features' hook)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.timm = model

    @property
    def classifier(self) -> nn.Module:
        return self.timm.get_classifier()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, pixel_values: torch.Tensor):
        # deferred: transformers takes seconds to import; only a backbone or text encoder needs it
        from transformers.modeling_outputs import ImageClassifierOutput

        return ImageClassifierOutput(logits=self.timm(pixel_values))


def is_timm(name: str) -> bool:
    """Whether `classifier.model` names a timm model (hub id, the tiny one, or a folder
    timm saved: its config.json names an `architecture`)."""
    if name.startswith(TIMM_PREFIX) or name == TINY_TIMM:
        return True
    config = Path(name) / "config.json"
    return config.is_file() and '"architecture"' in config.read_text()


def timm_source(name: str) -> str:
    """What `timm.create_model` loads: `hf-hub:timm/<name>` or `local-dir:<folder>`."""
    return f"hf-hub:{name}" if name.startswith(TIMM_PREFIX) else f"local-dir:{name}"


def load_timm(source: str, n_classes: int, image_size: int) -> tuple[TimmClassifier, dict]:
    """The pretrained model with a new `n_classes` head, and its data config (mean, std,
    input size). A profile's `classifier.image_size` other than the model's fixed input
    size stops here, naming the size to set."""
    # deferred: timm is imported only for a timm backbone
    import timm

    model = timm.create_model(source, pretrained=True, num_classes=n_classes)
    data = timm.data.resolve_model_data_config(model)
    size = data["input_size"][-1]
    if size != image_size and model.pretrained_cfg.get("fixed_input_size", False):
        raise ValueError(
            f"classifier.image_size {image_size} is not {source}'s input size {size}: "
            f"set classifier.image_size: {size}"
        )
    return TimmClassifier(model), data


def tiny_timm_dir(cfg: TinyVitConfig, image_size: int, cache: Path) -> Path:
    """Build (once, cached) a tiny timm ViT saved as timm saves hub checkpoints."""
    args = {
        "img_size": image_size,
        "patch_size": cfg.patch_size,
        "embed_dim": cfg.hidden_size,
        "depth": cfg.num_hidden_layers,
        "num_heads": cfg.num_attention_heads,
        "mlp_ratio": cfg.intermediate_size / cfg.hidden_size,
    }

    def build(folder: Path) -> None:
        # deferred: timm is imported only for a timm backbone
        import timm
        from timm.models import save_for_hf

        torch.manual_seed(cfg.seed)
        model = timm.create_model(TINY_ARCHITECTURE, pretrained=False, num_classes=0, **args)
        save_for_hf(model, str(folder), model_args=args, safe_serialization=True)

    return build_once(cache / f"tiny-timm-{config_hash(cfg, image_size)}", build)
