"""A classifier's loss and accuracy per epoch: the curves every trainer records."""

from __future__ import annotations

import torch
from torch import nn


def epoch_stats(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """The mean cross-entropy and the accuracy of `logits` against `labels`."""
    loss = nn.functional.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(1) == labels).float().mean().item()
