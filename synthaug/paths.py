"""The layout of one run folder, `<output_dir>/<name>/`: every path a stage reads or writes.

data/manifest.csv (+ .json)     the real images' splits           (data)
lora/                           weights, checkpoint, curves       (lora)
generated/                      the synthetic set, its manifest   (generate)
features/<classifier>.safetensors  frozen-backbone features       (classify)
cells/<cell>/metrics.json       one classifier per mix and seed   (classify)
notebooks/<task>.ipynb          the executed notebooks            (study)
logs/kernels.log, .status/      kernel output, live progress      (study)
book/, book/_build/html/        the Jupyter Book                  (book)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The file name diffusers' `save_lora_weights` writes and `load_lora_weights` reads.
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "data" / "manifest.csv"

    @property
    def manifest_settings(self) -> Path:
        return self.root / "data" / "manifest.json"

    @property
    def lora(self) -> Path:
        return self.root / "lora"

    @property
    def lora_weights(self) -> Path:
        return self.lora / LORA_WEIGHTS

    @property
    def lora_summary(self) -> Path:
        return self.lora / "summary.json"

    @property
    def generated(self) -> Path:
        return self.root / "generated"

    @property
    def generated_manifest(self) -> Path:
        return self.generated / "manifest.csv"

    def generated_shard(self, index: int, count: int) -> Path:
        return self.generated / f"manifest.shard{index}of{count}.csv"

    def features(self, classifier_key: str) -> Path:
        return self.root / "features" / f"{classifier_key}.safetensors"

    @property
    def cells(self) -> Path:
        return self.root / "cells"

    def cell_metrics(self, cell_name: str) -> Path:
        return self.cells / cell_name / "metrics.json"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    def executed(self, task_name: str) -> Path:
        return self.notebooks / f"{task_name}.ipynb"

    @property
    def kernel_log(self) -> Path:
        """What the Jupyter kernels themselves print (not the notebooks' output)."""
        return self.root / "logs" / "kernels.log"

    @property
    def status(self) -> Path:
        """Where running stages leave their latest progress line for `synthaug run`."""
        return self.root / ".status"

    @property
    def book(self) -> Path:
        return self.root / "book"

    @property
    def book_index(self) -> Path:
        return self.book / "_build" / "html" / "index.html"
