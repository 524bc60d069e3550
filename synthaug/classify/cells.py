"""One classifier per cell: its images drawn, its trainer run, its metrics and test
probabilities written; a cell whose metrics match its settings and images is skipped."""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from synthaug.classify.backbone import Backbone
from synthaug.classify.features import FeatureCache, feature_cache_path
from synthaug.classify.probabilities import save_probabilities
from synthaug.classify.results import cell_hash
from synthaug.classify.sampling import sample_balanced
from synthaug.classify.trainers import TRAINERS
from synthaug.config import StudyConfig
from synthaug.data import ImageLoader, ImageRecord, prepare_data, read_generated_manifest
from synthaug.design import Cell, default_real_count
from synthaug.io import read_json, same_settings, write_json
from synthaug.metrics import classification_report
from synthaug.runtime import provenance

log = logging.getLogger(__name__)


class CellRunner:
    """Runs cells of one study, sharing the loaded backbone and the feature cache."""

    def __init__(self, cfg: StudyConfig) -> None:
        self.cfg = cfg
        self.manifest = prepare_data(cfg)
        self.classes = self.manifest.classes
        self._backbone: Backbone | None = None
        self._generated: dict[tuple[str, int], list[ImageRecord]] = {}
        self.load = ImageLoader(cfg.dataset, cfg.paths.root)

    @functools.cached_property
    def feature_cache(self) -> FeatureCache:
        """The run's feature cache, loaded once (analysis reads and extends it)."""
        return FeatureCache(feature_cache_path(self.cfg))

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = Backbone(self.cfg, self.classes)
        return self._backbone

    def generated(self, arm: str = "lora", generator_seed: int = 0) -> list[ImageRecord]:
        """One arm's synthetic set of one generator seed (its manifest read once)."""
        key = (arm, generator_seed)
        if key not in self._generated:
            self._generated[key] = read_generated_manifest(self._arm_manifest(*key))
        return self._generated[key]

    def _arm_manifest(self, arm: str, generator_seed: int) -> Path:
        return self.cfg.at_generator_seed(generator_seed).paths.arm_manifest(arm)

    def warm_features(self, cells: list[Cell]) -> float:
        """Cache the frozen-backbone features of the images these cells draw, and of the
        test split, once, so that cells run in parallel only read the cache. A pool far
        larger than the draws costs only what is drawn (the analysis adds what it uses)."""
        records = self.manifest.split("test") + [r for c in cells for r in self.training_set(c)]
        return FeatureCache(feature_cache_path(self.cfg)).ensure(records, self.features)

    def training_set(self, cell: Cell) -> list[ImageRecord]:
        """The cell's training images: its real part from the pool, its generated part from
        its arm's set, each drawn class-balanced with the cell's seed."""
        real = sample_balanced(
            self.manifest.split("pool"), cell.n_real, self.classes, cell.seed, "real"
        )
        if not cell.n_generated:
            return real
        generated = self.generated(cell.arm, cell.generator_seed)
        return real + sample_balanced(
            generated, cell.n_generated, self.classes, cell.seed, "generated"
        )

    def features(self, records: list[ImageRecord]) -> torch.Tensor:
        """The backbone's features of these images (the backbone is loaded on first use)."""
        images = [self.load(r) for r in records]
        return self.backbone.features(images, self.cfg.classifier.batch_size)

    def run(self, cell: Cell) -> dict:
        """Train and test one cell, or return its saved metrics if they match its config."""
        out = self.cfg.paths.cell_metrics(cell.name)
        key = cell_hash(self.cfg, cell)
        if same_settings(out, {"config_hash": key}, str(out.parent)):
            log.info("%s: done already, skipped", cell.name)
            return read_json(out)
        provenance.record(self.cfg, f"03_train_ratio-{cell.name}")
        start = time.perf_counter()
        train = self.training_set(cell)
        test = self.manifest.split("test")
        label = {name: i for i, name in enumerate(self.classes)}
        train_y = [label[r.label] for r in train]
        test_y = [label[r.label] for r in test]
        timings: dict[str, float] = {}
        trainer = TRAINERS[self.cfg.classifier.mode]
        probs, history = trainer(self, cell, (train, train_y), (test, test_y), timings)
        timings["total_s"] = time.perf_counter() - start
        save_probabilities(self.cfg.paths.cell_probabilities(cell.name), probs, test, test_y)
        metrics = {
            "cell": {**asdict(cell), "name": cell.name, "kind": cell.kind},
            "config_hash": key,
            "classifier": self.cfg.classifier.model_dump(mode="json"),
            "backbone": self.cfg.classifier.model,
            "classes": self.classes,
            **classification_report(probs, np.asarray(test_y), self.classes),
            "history": history,
            "train_images": [[r.split, r.ref, r.sha256] for r in train],
            "test_images": [[r.split, r.ref, r.sha256] for r in test],
            "timings": timings,
        }
        write_json(out, metrics, indent=1, sort_keys=False)
        return metrics


def run_cell(
    cfg: StudyConfig, n_generated: int, n_real: int | None, seed: int, arm: str = "lora"
) -> dict:
    """Notebook 03's one call: train and test the classifier on one mix of one arm, with
    the synthetic set of `cfg`'s generator seed."""
    if n_real is None:
        n_real = default_real_count(cfg.study, n_generated)
    cfg.generation.check_arm(arm)
    cell = Cell(n_generated, n_real, seed, arm, cfg.generator_seed)
    return CellRunner(cfg.at_generator_seed(0)).run(cell)
