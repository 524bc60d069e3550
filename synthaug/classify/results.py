"""The run folder's finished cells, read without loading a model: whether a cell is done
with the current settings and images, and its metrics, with every metric registered since
it ran computed from its saved test probabilities. The cell runner and the analysis both
read cells through here."""

from __future__ import annotations

from dataclasses import asdict

from synthaug.classify.probabilities import read_probabilities
from synthaug.config import StudyConfig, config_hash
from synthaug.data import DataError, prepare_data, read_generated_manifest
from synthaug.design import Cell, study_cells
from synthaug.io import read_json, sha256_file
from synthaug.metrics import METRICS, classification_report


def cell_hash(cfg: StudyConfig, cell: Cell) -> str:
    """The key a cell's metrics are saved under: its settings, the data manifest and, for a
    cell with generated images, its arm's manifest (a clear error if it was not generated)."""
    key = asdict(cell)
    if not cell.generator_seed:  # generator seed 0: the key cells had before seeds
        del key["generator_seed"]
    inputs = [key, sha256_file(cfg.paths.manifest)]
    if cell.n_generated:
        arm_manifest = cfg.at_generator_seed(cell.generator_seed).paths.arm_manifest(cell.arm)
        read_generated_manifest(arm_manifest)
        inputs.append(sha256_file(arm_manifest))
    return config_hash(cfg.classifier, *inputs)


def is_done(cfg: StudyConfig, cell: Cell) -> bool:
    """Its metrics.json exists and was made with the current settings and images."""
    out = cfg.paths.cell_metrics(cell.name)
    try:
        return out.exists() and read_json(out).get("config_hash") == cell_hash(cfg, cell)
    except DataError:
        return False


def read_cell(cfg: StudyConfig, cell: Cell) -> dict:
    """The saved metrics of a cell that is done, with every metric of the registry
    (`metrics.METRICS`) it did not save computed from its saved probabilities."""
    saved = read_json(cfg.paths.cell_metrics(cell.name))
    path = cfg.paths.cell_probabilities(cell.name)
    missing = [name for name in METRICS if name not in saved]
    if missing and path.exists():
        probs, labels = read_probabilities(path)
        saved |= classification_report(probs, labels, saved["classes"], missing)
    return saved


def finished_cells(cfg: StudyConfig) -> list[dict]:
    """The metrics of every study cell that is done with the current settings."""
    cells = study_cells(cfg, len(prepare_data(cfg).classes))
    return [read_cell(cfg, c) for c in cells if is_done(cfg, c)]
