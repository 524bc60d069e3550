"""A cell's test probabilities on disk: what its metrics are computed from, now or later."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from synthaug.io import atomic_write_bytes


def save_probabilities(path: Path, probs: np.ndarray, test: list, labels: list[int]) -> None:
    """A cell's test probabilities as fp16, with each row's test image and label."""
    refs = json.dumps([r.ref for r in test])
    tensors = {
        "probabilities": torch.from_numpy(probs).half().contiguous(),
        "labels": torch.tensor(labels),
    }
    atomic_write_bytes(path, save(tensors, metadata={"test_refs": refs}))


def read_probabilities(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The saved probabilities (as float32) and true labels of a cell's test images."""
    with safe_open(str(path), "pt") as handle:
        probs = handle.get_tensor("probabilities").float().numpy()
        return probs, handle.get_tensor("labels").numpy()
