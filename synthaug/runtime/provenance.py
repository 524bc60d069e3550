"""What a run was made with: the resolved config and the exact package versions.

`runs/<name>/config.yaml` is the study's config with every default filled in (a profile
of its own: `synthaug run -f runs/<name>/config.yaml` reruns or rebuilds this run), and
`runs/<name>/provenance/<task>.json` records, for each task that did work, the package
versions, the Python, the platform and the code's git commit it ran with.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING

import torch
import yaml

from synthaug.io import atomic_write_text, read_json, write_json
from synthaug.paths import project_root, seeded

if TYPE_CHECKING:
    from synthaug.config import StudyConfig

PACKAGES = (
    "synthaug",
    "torch",
    "diffusers",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "prodigyopt",
    "datasets",
    "numpy",
    "scipy",
    "pandas",
    "matplotlib",
    "papermill",
    "nbclient",
    "jupyter-book",
    "pydantic",
)


def package_versions() -> dict[str, str | None]:
    """The installed version of each package the study's results depend on (None: absent)."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_revision() -> str | None:
    """The git commit of the package's checkout, `+dirty` with uncommitted changes; None
    outside a git checkout."""
    root = project_root()

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


@functools.cache
def environment() -> dict:
    """Versions, Python, platform, commit and, when there is one, the GPU: read once per
    process (what this process imported is what its tasks ran with)."""

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "code_revision": code_revision(),
        "cpu": cpu_model(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if "model name" in line]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def resolved_config(cfg: StudyConfig) -> str:
    """The config as YAML with every default filled in: a profile that makes this run."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def write_config(cfg: StudyConfig) -> None:
    """`runs/<name>/config.yaml`: the config the study runs with now."""
    atomic_write_text(cfg.paths.config, resolved_config(cfg))


def data_source(cfg: StudyConfig) -> dict | None:
    """Which source the manifest's images were read from (a folder, or a hub id with its
    fingerprint), as the data stage recorded it; None before the manifest exists."""
    path = cfg.paths.manifest_settings
    return read_json(path).get("source") if path.exists() else None


def record(cfg: StudyConfig, task: str) -> None:
    """`provenance/<task>.json`: what this task is about to make its outputs with (the
    task of `cfg`'s generator seed: `01_lora-g1` for seed 1)."""
    task = seeded(task, cfg.generator_seed)
    write_json(
        cfg.paths.provenance(task),
        {
            "task": task,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            **environment(),
            "data": data_source(cfg),
            "models": {
                "generator_family": cfg.generator.family,
                "generator": cfg.generator.base_model,
                "classifier_backbone": cfg.classifier.model,
            },
            "config": cfg.model_dump(mode="json"),
        },
    )
