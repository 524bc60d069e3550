"""`synthaug export`: a finished study's LoRA and one arm's synthetic set as two folders that
anyone loads without synthaug.

- `<to>/lora/`: the LoRA as the family pipeline's `load_lora_weights` reads it, its
  per-epoch sample grids, and a model card (`synthaug.machinery.cards`);
- `<to>/dataset/`: the synthetic set in the hub's ImageFolder layout, `train/<class>/*.png`
  with `train/metadata.csv` (`file_name` and the generation manifest's columns), and a
  dataset card declaring the class names.

Each folder is written beside its place and renamed into it, so an interrupted export
leaves no half folder; an export of another study (or arm) already at `<to>` is refused.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from synthaug.config import StudyConfig
from synthaug.data import DataError
from synthaug.generate import FIELDS
from synthaug.io import read_csv, read_json, safetensors_digest, write_csv, write_json
from synthaug.machinery import cards
from synthaug.machinery.lock import study_lock
from synthaug.machinery.stages import list_tasks

MARKER = "synthaug-export.json"  # which study and arm a folder was exported from
METADATA_FIELDS = ("file_name", *FIELDS[1:])  # the generation manifest's, file as file_name


@dataclass(frozen=True)
class Exported:
    lora: Path
    dataset: Path


def missing_stage(cfg: StudyConfig, arm: str) -> str | None:
    """The first stage the export needs that has not finished (lora, generate, classify)."""

    for task in list_tasks(cfg, until="classify"):
        wanted = task.stage != "generate" or task.name.startswith(_generate_task(arm))
        if wanted and not task.is_done():
            return f"{task.stage} stage (task {task.name})"
    return None


def _generate_task(arm: str) -> str:
    return "02_generate" if arm == "lora" else f"02_generate-{arm}"


def export_study(cfg: StudyConfig, to: Path, arm: str = "lora") -> Exported:
    """Write `<to>/lora` and `<to>/dataset`; a `DataError` names an unfinished stage."""

    cfg.generation.check_arm(arm)
    with study_lock(cfg.run_dir, create=False):
        if stage := missing_stage(cfg, arm):
            raise DataError(
                f"study {cfg.name} is not finished: its {stage} has not run; run "
                "`synthaug run -f <profile>` to the end first, then export"
            )
        identity = _identity(cfg, arm)
        _refuse_other_export(to, identity)
        facts = cards.study_facts(cfg, arm, identity["lora_sha256"])
        lora = _replace_folder(to / "lora", lambda tmp: _write_lora(cfg, tmp, facts))
        dataset = _replace_folder(to / "dataset", lambda tmp: _write_dataset(cfg, arm, tmp, facts))
        write_json(to / MARKER, identity)
    return Exported(lora, dataset)


def _identity(cfg: StudyConfig, arm: str) -> dict:

    return {
        "study": cfg.name,
        "arm": arm,
        "lora_sha256": safetensors_digest(cfg.paths.lora_weights),
    }


def _refuse_other_export(to: Path, identity: dict) -> None:
    marker = to / MARKER
    found = read_json(marker) if marker.exists() else None
    if found is not None and found != identity:
        raise DataError(
            f"{to} holds an export of another study or arm ({found}); "
            "choose another --to, or delete it"
        )
    if found is None and any((to / name).exists() for name in ("lora", "dataset")):
        raise DataError(f"{to} already has lora/ or dataset/ folders; choose another --to")


def _replace_folder(target: Path, write) -> Path:
    """`write(tmp)` into a fresh folder beside `target`, then swap it in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        write(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_lora(cfg: StudyConfig, folder: Path, facts: dict) -> None:

    shutil.copy2(cfg.paths.lora_weights, folder / cfg.paths.lora_weights.name)
    samples = sorted((cfg.paths.lora / "samples").glob("epoch_*.png"))
    (folder / "samples").mkdir()
    for grid in samples:
        shutil.copy2(grid, folder / "samples" / grid.name)
    cards.model_card(cfg, facts, [f"samples/{g.name}" for g in samples]).save(folder / "README.md")


def _write_dataset(cfg: StudyConfig, arm: str, folder: Path, facts: dict) -> None:

    source = cfg.paths.arm(arm)
    rows = read_csv(cfg.paths.arm_manifest(arm))
    train = folder / "train"
    for row in rows:
        (train / row["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / row["file"], train / row["file"])
    write_csv(
        train / "metadata.csv",
        METADATA_FIELDS,
        ([row["file"], *(row[f] for f in METADATA_FIELDS[1:])] for row in rows),
    )
    classes = sorted({row["label"] for row in rows})
    cards.dataset_card(cfg, arm, facts, classes, len(rows)).save(folder / "README.md")
