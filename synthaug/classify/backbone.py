"""The classifier model and its normalisation, as hub checkpoints load them."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from PIL import Image

from synthaug.classify.pixels import to_pixels
from synthaug.config import StudyConfig
from synthaug.models import backbone_kind, classifier_source, default_device
from synthaug.runtime import quiet
from synthaug.runtime.compiling import compile_blocks
from synthaug.timm_backbone import load_timm


def _transformers_classifier(source: str, classes: list[str]) -> tuple:
    """A transformers image classifier with a new head of `classes`, and its image
    processor's mean and std."""
    # deferred: transformers takes seconds to import; only a backbone or text encoder needs it
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    processor = AutoImageProcessor.from_pretrained(source)
    model = AutoModelForImageClassification.from_pretrained(
        source,
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={name: i for i, name in enumerate(classes)},
    )
    return model, list(processor.image_mean), list(processor.image_std)


class Backbone:
    """The classifier model and its normalisation, loaded the way hub checkpoints are: a
    transformers image classifier (`AutoModelForImageClassification`, its image processor's
    mean and std) or a timm model (`create_model`, its data config). Either is called as
    `model(pixel_values=...).logits` and has its head as `model.classifier`, whose input is
    the feature space of the linear probe and the quality metrics."""

    def __init__(self, cfg: StudyConfig, classes: list[str], head_seed: int | None = None) -> None:
        source = classifier_source(cfg.classifier)  # building a tiny stand-in draws numbers
        if head_seed is not None:  # so the new head's weights are the seed's own, not what
            torch.manual_seed(head_seed)  # the process (a warm kernel's cells) drew before
        quiet.before_loading()
        self.size = cfg.classifier.image_size
        self.source = source
        if backbone_kind(cfg.classifier.model) == "timm":
            model, data = load_timm(source, len(classes), self.size)
            self.mean, self.std = list(data["mean"]), list(data["std"])
        else:
            model, self.mean, self.std = _transformers_classifier(source, classes)
        self.model = model.to(default_device())
        compile_blocks(self.model, cfg.classifier.compile)

    def pixels(self, images: Iterable[Image.Image]) -> torch.Tensor:
        return to_pixels(images, self.size, self.mean, self.std)

    @torch.no_grad()
    def features(self, images: list[Image.Image], batch_size: int) -> torch.Tensor:
        """The classifier head's input (CLS for ViT; CLS + mean patch for DINOv2), computed
        on the model's device and returned on the CPU as float32."""
        captured: list[torch.Tensor] = []
        hook = self.model.classifier.register_forward_pre_hook(
            lambda _module, args: captured.append(args[0].detach().float().cpu())
        )
        self.model.eval()
        try:
            for start in range(0, len(images), batch_size):
                pixels = self.pixels(images[start : start + batch_size])
                self.model(pixel_values=pixels.to(self.model.device, self.model.dtype))
        finally:
            hook.remove()
        return torch.cat(captured)
