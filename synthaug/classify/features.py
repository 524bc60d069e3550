"""The linear probe's frozen-backbone features, one row per image, cached in the run folder."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

from synthaug.config import StudyConfig, config_hash
from synthaug.data import ImageRecord
from synthaug.io import atomic_write_bytes
from synthaug.runtime.progress import Progress


class FeatureCache:
    """Frozen-backbone features per image (keyed by sha256), one atomically written file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, torch.Tensor] = {}
        if path.exists():
            with safe_open(str(path), "pt") as handle:
                keys = json.loads(handle.metadata()["sha256"])
                self.rows = dict(zip(keys, handle.get_tensor("features"), strict=True))

    def ensure(
        self, records: list[ImageRecord], compute: Callable[[list[ImageRecord]], torch.Tensor]
    ) -> float:
        """Compute (with `compute`) the features of the records not cached yet; return the
        seconds it took. Nothing is computed, or loaded, when every record is cached."""
        todo = list({r.sha256: r for r in records if r.sha256 not in self.rows}.values())
        if not todo:
            return 0.0
        start = time.perf_counter()
        with Progress(len(todo), "backbone features", "images") as progress:
            for chunk in range(0, len(todo), 256):
                batch = todo[chunk : chunk + 256]
                features = compute(batch)
                self.rows.update(zip((r.sha256 for r in batch), features, strict=True))
                progress.update(len(batch))
        keys = sorted(self.rows)
        blob = save(
            {"features": torch.stack([self.rows[k] for k in keys]).contiguous()},
            metadata={"sha256": json.dumps(keys)},
        )
        atomic_write_bytes(self.path, blob)
        return time.perf_counter() - start

    def matrix(self, records: list[ImageRecord]) -> torch.Tensor:
        return torch.stack([self.rows[r.sha256] for r in records])


def feature_cache_path(cfg: StudyConfig) -> Path:
    """The linear probe's feature cache of this run and backbone."""
    c = cfg.classifier
    return cfg.paths.features(config_hash(c.tiny, c.model, c.image_size))
