"""The study's design: which classifier training sets (cells) it fits, and whether the
data can supply them.

A cell is (n_generated, n_real, seed, arm, generator_seed): a mix of the paper's Table 2,
or a baseline (real only at the mix's real count or at the full mix size; generated only,
the CAS), for each generation arm; and the points of the sample-efficiency sweep (real
only, and real plus a fixed synthetic set per arm, over real images per class).
Real-only cells belong to no arm (they are listed under `lora`, once) and to no
generator seed: a cell with generated images runs for every (generator seed, classifier
seed), a real-only one once per classifier seed. Listing cells needs no model, so the
study's planner and the analysis read them from here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from synthaug.config import StudyConfig, StudySection
from synthaug.data import DataError, Manifest, spread
from synthaug.metrics import nested_interval_columns, number_metric


@dataclass(frozen=True)
class Cell:
    n_generated: int
    n_real: int
    seed: int
    arm: str = "lora"
    generator_seed: int = 0

    def __post_init__(self) -> None:
        if not self.n_generated:  # real only: the same for every arm and generator seed
            object.__setattr__(self, "arm", "lora")
            object.__setattr__(self, "generator_seed", 0)

    @property
    def name(self) -> str:
        prefix = "" if self.arm == "lora" else f"{self.arm}-"
        generator = f"-g{self.generator_seed}" if self.generator_seed else ""
        return f"{prefix}gen{self.n_generated}-real{self.n_real}{generator}-seed{self.seed}"

    @property
    def kind(self) -> str:
        if self.n_real == 0:
            return "generated_only"
        return "real_only" if self.n_generated == 0 else "mix"


def study_cells(cfg: StudyConfig, n_classes: int) -> list[Cell]:
    """Every mix and baseline of the study for each arm, then the sample-efficiency sweep,
    once per classifier seed, and those with generated images once per generator seed too
    (a cell listed twice, e.g. a baseline equal to a mix, runs once)."""
    cells = [c for arm in cfg.generation.arms for c in design_cells(cfg, arm)]
    unique = list(dict.fromkeys(cells + sweep_cells(cfg, n_classes)))
    study = cfg.study
    return [
        Cell(c.n_generated, c.n_real, seed, c.arm, generator_seed)
        for c in unique
        for generator_seed in (study.generator_seeds if c.n_generated else [0])
        for seed in study.seeds
    ]


def design_cells(cfg: StudyConfig, arm: str = "lora") -> list[Cell]:
    """The paper's design for one arm (seed 0): its mixes, and the baselines."""
    study = cfg.study
    cells: list[Cell] = []
    for mix in study.resolved_mixes():
        cells.append(Cell(mix.n_generated, mix.n_real, 0, arm))
        if study.baseline_real_same_count:
            cells.append(Cell(0, mix.n_real, 0))
    if study.baseline_real_full:
        cells.append(Cell(0, study.mix_size, 0))
    if study.baseline_generated_only and study.generated_only_count:
        cells.append(Cell(study.generated_only_count, 0, 0, arm))
    return list(dict.fromkeys(cells))


def sweep_cells(cfg: StudyConfig, n_classes: int) -> list[Cell]:
    """The sample-efficiency sweep (seed 0): per count of real images per class, real only
    and, for each arm, the same real images plus `generated_per_class` synthetic ones."""
    sweep = cfg.study.sample_efficiency
    if sweep is None:
        return []
    added = sweep.generated_per_class * n_classes
    return [
        cell
        for per_class in sweep.real_per_class
        for cell in (
            Cell(0, per_class * n_classes, 0),
            *(Cell(added, per_class * n_classes, 0, arm) for arm in cfg.generation.arms),
        )
    ]


def default_real_count(study: StudySection, n_generated: int) -> int:
    """The real part of the mix with `n_generated` generated images (mix size minus it)."""
    total = study.mix_size
    if n_generated > total:
        raise DataError(f"n_generated={n_generated} exceeds the study's mix size {total}")
    return total - n_generated


def shortfalls(cfg: StudyConfig, cells: list[Cell], manifest: Manifest) -> list[str]:
    """Every cell that cannot be drawn: a class whose real pool or generated share holds
    fewer images than the cell's class-balanced draw needs (one line per mix, not per seed)."""
    pool = Counter(r.label for r in manifest.split("pool"))
    made = spread(cfg.generation.count, manifest.classes)
    problems = []
    for cell in dict.fromkeys(Cell(c.n_generated, c.n_real, 0, c.arm) for c in cells):
        name = cell.name.removesuffix("-seed0")
        for kind, n, available, fix in (
            ("real", cell.n_real, pool, "splits.pool or the mix sizes"),
            ("generated", cell.n_generated, made, "generation.count"),
        ):
            need = spread(n, manifest.classes) if n else {}
            short = [label for label, count in need.items() if count > available[label]]
            if short:
                label = short[0]
                have = f"only {available[label]} are available"
                if kind == "generated" and cell.arm == "filtered":
                    candidates = available[label] * cfg.generation.oversample
                    have = (
                        f"the filter keeps only {available[label]} of its {candidates} candidates"
                    )
                problems.append(
                    f"cell {name} needs {need[label]} {kind} images of class {label!r} "
                    f"({n} over {len(manifest.classes)} classes) but {have}"
                    + (f" (and {len(short) - 1} more classes)" if len(short) > 1 else "")
                    + f"; raise {fix}"
                )
    return problems


def cell_arm(metrics: dict) -> str:
    """The arm of a finished cell (cells from before arms existed are the LoRA's)."""
    return metrics["cell"].get("arm", "lora")


def cell_generator_seed(metrics: dict) -> int:
    """The generator seed of a finished cell (0 for real-only cells and older cells)."""
    return metrics["cell"].get("generator_seed", 0)


def by_pair(cells: list[dict], arm: str = "lora") -> dict[tuple[int, int], list[dict]]:
    """Finished cells (their metrics) of one arm, and every real-only cell, grouped by
    (n_generated, n_real): one list of (generator seed, seed) runs per training set."""
    groups: dict[tuple[int, int], list[dict]] = {}
    for metrics in cells:
        cell = metrics["cell"]
        if cell["n_generated"] and cell_arm(metrics) != arm:
            continue
        groups.setdefault((cell["n_generated"], cell["n_real"]), []).append(metrics)
    return groups


def runs_interval(runs: list[dict], key: str, name: str | None = None) -> dict[str, float]:
    """The mean of the number metric `key` over finished runs of one training set and its
    95% CI over the generator seeds where there are several
    (`metrics.nested_interval_columns`); a table metric is refused by name."""
    number_metric(key)
    groups: dict[int, list[float]] = {}
    for metrics in runs:
        groups.setdefault(cell_generator_seed(metrics), []).append(metrics[key])
    return nested_interval_columns(dict(sorted(groups.items())), name or key)
