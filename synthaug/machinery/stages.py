"""The study's stages, each declared once: its name, its notebook, what it writes, how it
lists its tasks from a config and how it knows each task is done.

`list_tasks`, the local runner (`study`), the SLURM executor (one job array per stage),
`--print-tasks`, the book's reproduce page and the CLI's `--stage` choices all read
`STAGES`; the README's stage table is checked against it (tests/test_docs.py).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from synthaug.classify.results import is_done
from synthaug.config import StudyConfig
from synthaug.data import prepare_data
from synthaug.design import study_cells
from synthaug.generate import is_complete, task_name
from synthaug.lora import is_trained
from synthaug.machinery.book import book_is_current, build_book
from synthaug.models import compute_devices
from synthaug.paths import seeded

log = logging.getLogger(__name__)


@dataclass
class Task:
    """One notebook run (or, with no notebook, the book's build) of one stage."""

    stage: str
    name: str
    notebook: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    is_done: Callable[[], bool] = lambda: False


@dataclass(frozen=True)
class Stage:
    """One stage of the study. `tasks(cfg, shards)` lists its tasks, each with its done
    check; a stage without a notebook is run by `build` instead."""

    name: str
    notebook: str | None
    package: str
    writes: str
    tasks: Callable[[StudyConfig, int | None], list[Task]]
    build: Callable[[StudyConfig], Any] | None = None


# ---- how a stage knows a task is done ----------------------------------------------------
# Outputs found unreadable (half-written by a run of an older version, or damaged), by
# path: each is treated as not done, and named once in a warning.
UNREADABLE: dict[str, str] = {}


def is_readable_notebook(path: Path) -> bool:
    """An executed notebook exists and is whole (JSON); a damaged one counts as not done."""
    if not path.exists():
        return False
    try:
        json.loads(path.read_bytes())
    except (ValueError, OSError) as error:
        _unreadable(path, error)
        return False
    return True


def readable(name: str, check: Callable[[], bool]) -> bool:
    """`check()`, with an output it cannot read counted as not done."""
    try:
        return check()
    except (ValueError, OSError, KeyError, csv.Error, SafetensorError) as error:
        _unreadable(name, error)
        return False


def _unreadable(what: Path | str, error: BaseException) -> None:
    if str(what) not in UNREADABLE:
        UNREADABLE[str(what)] = f"{type(error).__name__}: {str(error)[:120]}"
        log.warning("%s cannot be read (%s): it is redone", what, UNREADABLE[str(what)])


def _done(cfg: StudyConfig, name: str, check: Callable[[], bool]) -> Callable[[], bool]:
    """A notebook task is done when its executed notebook is whole and its output current."""
    return lambda: is_readable_notebook(cfg.paths.executed(name)) and readable(name, check)


def seed_parameter(generator_seed: int) -> dict[str, int]:
    """The notebook parameter of a generator seed (none for seed 0, the study itself)."""
    return {"generator_seed": generator_seed} if generator_seed else {}


def stage_devices(cfg: StudyConfig, stage: str) -> list[str | None]:
    """One entry per worker of `stage`: the GPU its kernel is pinned to, or None (no
    pinning). Generation runs one shard per GPU, classifier cells one kernel per GPU; on
    a CPU, `study.devices` generation processes and `study.workers` classifier kernels."""
    devices = compute_devices(cfg.study.devices)
    on_gpus = devices[0] is not None
    if stage == "generate" or (stage == "classify" and on_gpus and len(devices) > 1):
        return devices
    if stage == "classify":
        return [None] * cfg.study.workers
    return [None]


# ---- each stage's tasks --------------------------------------------------------------------
def _lora_tasks(cfg: StudyConfig, _shards: int | None) -> list[Task]:
    """One LoRA per generator seed."""
    tasks = []
    for g in cfg.study.generator_seeds:
        name, trained = seeded("01_lora", g), cfg.at_generator_seed(g)
        check = _done(cfg, name, lambda c=trained: is_trained(c))
        tasks.append(Task("lora", name, "01_lora", seed_parameter(g), check))
    return tasks


def _generate_tasks(cfg: StudyConfig, shards: int | None) -> list[Task]:
    """Per generator seed and arm, the arm's images in `shards` tasks (default: one per
    worker of this machine)."""
    shards = shards or len(stage_devices(cfg, "generate"))
    tasks = []
    for g in cfg.study.generator_seeds:
        made = cfg.at_generator_seed(g)
        for arm in cfg.generation.arms:
            for index in range(shards):
                name = seeded(task_name(arm, index, shards), g)
                parameters = {"shard": f"{index}/{shards}"} if shards > 1 else {}
                if arm != "lora":
                    parameters["arm"] = arm
                check = _done(cfg, name, lambda a=arm, c=made: is_complete(c, a))
                parameters |= seed_parameter(g)
                tasks.append(Task("generate", name, "02_generate", parameters, check))
    return tasks


def _classify_tasks(cfg: StudyConfig, _shards: int | None) -> list[Task]:
    """One classifier per cell of the design (mix or baseline, seed, arm, generator seed)."""
    tasks = []
    for cell in study_cells(cfg, len(prepare_data(cfg, write=False).classes)):
        name = f"03_train_ratio-{cell.name}"
        params = {"n_generated": cell.n_generated, "n_real": cell.n_real, "seed": cell.seed}
        if cell.arm != "lora":
            params["arm"] = cell.arm
        params |= seed_parameter(cell.generator_seed)
        check = _done(cfg, name, lambda c=cell: is_done(cfg, c))
        tasks.append(Task("classify", name, "03_train_ratio", params, check))
    return tasks


def _analysis_tasks(cfg: StudyConfig, _shards: int | None) -> list[Task]:
    """One page; current when newer than every notebook before it."""

    def current() -> bool:
        mine = cfg.paths.executed("04_analysis")
        others = list(cfg.paths.notebooks.glob("0[123]_*.ipynb"))
        return mine.exists() and all(p.stat().st_mtime <= mine.stat().st_mtime for p in others)

    return [Task("analysis", "04_analysis", "04_analysis", {}, current)]


def _book_tasks(cfg: StudyConfig, _shards: int | None) -> list[Task]:
    """The book; current when its HTML is newer than every executed notebook."""
    return [Task("book", "book", None, {}, lambda: book_is_current(cfg))]


def _build_book(cfg: StudyConfig) -> Path:
    return build_book(cfg, {s.notebook: s.name for s in STAGES if s.notebook})


# ---- the declaration ---------------------------------------------------------------------
STAGES: tuple[Stage, ...] = (
    Stage(
        name="lora",
        notebook="01_lora",
        package="synthaug.lora",
        writes="lora/: the LoRA's weights, loss log and summary",
        tasks=_lora_tasks,
    ),
    Stage(
        name="generate",
        notebook="02_generate",
        package="synthaug.generate",
        writes="generated/, generated-<arm>/: each arm's images and manifest",
        tasks=_generate_tasks,
    ),
    Stage(
        name="classify",
        notebook="03_train_ratio",
        package="synthaug.classify",
        writes="cells/<cell>/: each classifier's metrics and test probabilities",
        tasks=_classify_tasks,
    ),
    Stage(
        name="analysis",
        notebook="04_analysis",
        package="synthaug.analysis",
        writes="notebooks/04_analysis.ipynb: the tables and figures",
        tasks=_analysis_tasks,
    ),
    Stage(
        name="book",
        notebook=None,
        package="synthaug.machinery.book",
        writes="book/_build/html/: the report",
        tasks=_book_tasks,
        build=_build_book,
    ),
)
STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)


def stage_named(name: str) -> Stage:
    return next(stage for stage in STAGES if stage.name == name)


def list_tasks(cfg: StudyConfig, until: str | None = None, shards: int | None = None) -> list[Task]:
    """Every task of the study, up to and including stage `until`; each arm's images in
    `shards` generation tasks (default: one per worker of this machine)."""
    stages = STAGES[: STAGE_NAMES.index(until) + 1] if until else STAGES
    return [task for stage in stages for task in stage.tasks(cfg, shards)]
