"""The layout of one run folder, `<output_dir>/<name>/`: every path a stage reads or writes.

config.yaml                     the resolved config: a profile    (study)
data/manifest.csv (+ .json)     the real images' splits           (data)
lora/                           weights, checkpoint, curves       (lora)
generated/                      the synthetic set, its manifest   (generate)
generated-<arm>/                the same for another arm (base, img2img)
lora-g<g>/, generated[-<arm>]-g<g>/  the same for generator seed g > 0
features/<classifier>.safetensors  frozen-backbone features       (classify)
cells/<cell>/metrics.json       one classifier per mix and seed   (classify)
cells/<cell>/probabilities.safetensors  its test probabilities   (classify)
notebooks/<task>.ipynb          the executed notebooks            (study)
logs/kernels.log, .status/      kernel output, live progress      (study)
logs/slurm/                     job scripts, logs, submission     (slurm)
book/, book/_build/html/        the Jupyter Book                  (book)
provenance/<task>.json          package versions and resolved config per task
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def project_root() -> Path:
    """The folder relative paths in a profile are read from.

    `SYNTHAUG_ROOT` if set; else the nearest folder at or above the working directory
    that holds `params/` (so a notebook opened from `notebooks/` resolves like the CLI).
    """
    if env := os.environ.get("SYNTHAUG_ROOT"):
        return Path(env).resolve()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "params").is_dir():
            return folder
    return cwd


TMPDIR = "$TMPDIR/"  # how `shown` writes the temporary folder, and `resolve_path` reads it


def shown(value: object, run_dir: Path | None = None) -> object:
    """A value as a report page shows it: every value a page shows passes through here.

    A path, or a string holding paths, loses what names this machine: inside `run_dir`
    it is relative to the run folder, inside the project relative to the project (as a
    command run there takes it), under the home folder `~/...`, under the temporary
    folder `$TMPDIR/...`. Any other value is returned as it is."""
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        return value
    for folder, prefix in _machine_folders(run_dir):
        if value == folder:
            return prefix.rstrip("/") or "."
        value = value.replace(f"{folder}/", prefix)
    return value


def _machine_folders(run_dir: Path | None) -> list[tuple[str, str]]:
    """The folders `shown` shortens, the most specific first, with what replaces them."""
    folders = [
        (run_dir, ""),
        (project_root(), ""),
        (Path.home(), "~/"),
        (Path(tempfile.gettempdir()), TMPDIR),
    ]
    return [(str(folder), prefix) for folder, prefix in folders if folder is not None]


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """A path as a profile or page gives it: `~/...` under the home folder, `$TMPDIR/...`
    under the temporary folder (as `shown` writes them), else absolute or relative to the
    project root."""
    text = str(path)
    if text.startswith(TMPDIR):
        return Path(tempfile.gettempdir()) / text.removeprefix(TMPDIR)
    path = Path(text).expanduser()
    return path if path.is_absolute() else project_root() / path


# The file name diffusers' `save_lora_weights` writes and `load_lora_weights` reads.
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def seeded(name: str, generator_seed: int) -> str:
    """A folder or task of one generator seed: `lora` for seed 0, `lora-g2` for seed 2."""
    return f"{name}-g{generator_seed}" if generator_seed else name


def shard_manifest(folder: Path, index: int, count: int) -> Path:
    """The manifest generation shard `index` of `count` writes in `folder`."""
    return folder / f"manifest.shard{index}of{count}.csv"


class RunPaths:
    """Every path of the run folder at `root` (`cfg.paths`)."""

    def __init__(self, root: Path, generator_seed: int = 0) -> None:
        self.root = root
        self.generator_seed = generator_seed
        self.config = root / "config.yaml"  # the resolved config (provenance.write_config)
        data, lora = root / "data", root / self._seeded("lora")
        self.manifest, self.manifest_settings = data / "manifest.csv", data / "manifest.json"
        self.lora, self.lora_weights = lora, lora / LORA_WEIGHTS
        self.lora_summary = lora / "summary.json"
        self.generated = root / self._seeded("generated")
        self.generated_manifest = self.generated / "manifest.csv"
        self.cells, self.notebooks = root / "cells", root / "notebooks"
        # what the Jupyter kernels themselves print (not the notebooks' output), and where
        # running stages leave their latest progress line for `synthaug run`
        self.kernel_log, self.status = root / "logs" / "kernels.log", root / ".status"
        self.slurm = root / "logs" / "slurm"  # `--executor slurm`: scripts, job logs
        self.book = root / "book"
        self.book_index = self.book / "_build" / "html" / "index.html"

    def _seeded(self, folder: str) -> str:
        return seeded(folder, self.generator_seed)

    def arm(self, arm: str) -> Path:
        """The folder of one generation arm: `generated/` for the LoRA's (the paper's)."""
        return self.generated if arm == "lora" else self.root / self._seeded(f"generated-{arm}")

    def arm_manifest(self, arm: str) -> Path:
        return self.arm(arm) / "manifest.csv"

    def generated_shard(self, index: int, count: int, arm: str = "lora") -> Path:
        return shard_manifest(self.arm(arm), index, count)

    def provenance(self, task_name: str) -> Path:
        return self.root / "provenance" / f"{task_name}.json"

    def features(self, classifier_key: str) -> Path:
        return self.root / "features" / f"{classifier_key}.safetensors"

    def cell_metrics(self, cell_name: str) -> Path:
        return self.cells / cell_name / "metrics.json"

    def cell_probabilities(self, cell_name: str) -> Path:
        """The cell's test-set probabilities (fp16) and test refs: what metrics read."""
        return self.cells / cell_name / "probabilities.safetensors"

    def executed(self, task_name: str) -> Path:
        return self.notebooks / f"{task_name}.ipynb"
