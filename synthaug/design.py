"""The study's design: which classifier training sets (cells) it fits, and whether the
data can supply them.

A cell is (n_generated, n_real, seed): a mix of the paper's Table 2, or a baseline (real
only at the mix's real count or at the full mix size; generated only, the CAS). Listing
cells needs no model, so the study's planner and the analysis read them from here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from synthaug.config import StudyConfig, StudySection
from synthaug.data import DataError, Manifest, spread


@dataclass(frozen=True)
class Cell:
    n_generated: int
    n_real: int
    seed: int

    @property
    def name(self) -> str:
        return f"gen{self.n_generated}-real{self.n_real}-seed{self.seed}"

    @property
    def kind(self) -> str:
        if self.n_real == 0:
            return "generated_only"
        return "real_only" if self.n_generated == 0 else "mix"


def study_cells(study: StudySection) -> list[Cell]:
    """Every mix and baseline of the study, once per seed (a baseline equal to a mix runs once)."""
    pairs: list[tuple[int, int]] = []
    for mix in study.resolved_mixes():
        pairs.append((mix.n_generated, mix.n_real))
        if study.baseline_real_same_count:
            pairs.append((0, mix.n_real))
    if study.baseline_real_full:
        pairs.append((0, study.mix_size))
    if study.baseline_generated_only and study.generated_only_count:
        pairs.append((study.generated_only_count, 0))
    unique = list(dict.fromkeys(pairs))
    return [Cell(g, r, seed) for g, r in unique for seed in study.seeds]


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
    for cell in dict.fromkeys(Cell(c.n_generated, c.n_real, 0) for c in cells):
        name = cell.name.removesuffix("-seed0")
        for kind, n, available, fix in (
            ("real", cell.n_real, pool, "splits.pool or the mix sizes"),
            ("generated", cell.n_generated, made, "generation.count"),
        ):
            need = spread(n, manifest.classes) if n else {}
            short = [label for label, count in need.items() if count > available[label]]
            if short:
                label = short[0]
                problems.append(
                    f"cell {name} needs {need[label]} {kind} images of class {label!r} "
                    f"({n} over {len(manifest.classes)} classes) but only {available[label]} "
                    f"are available"
                    + (f" (and {len(short) - 1} more classes)" if len(short) > 1 else "")
                    + f"; raise {fix}"
                )
    return problems
