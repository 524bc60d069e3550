"""The one preprocessing of real and generated images: bicubic resize, scale, normalise."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from PIL import Image


def to_pixels(
    images: Iterable[Image.Image], size: int, mean: list[float], std: list[float]
) -> torch.Tensor:
    """The one preprocessing for real and generated images: bicubic resize, scale, normalise."""
    pixels = resized(images, size).float() / 255.0
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def resized(images: Iterable[Image.Image], size: int) -> torch.Tensor:
    """RGB images resized (bicubic) to size x size, as one uint8 (N, 3, size, size) tensor."""
    arrays = [
        np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
        for image in images
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
