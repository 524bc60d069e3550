"""The generator's own randomness in the study: a LoRA and its sets per generator seed."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from synthaug.analysis.answer import headline
from synthaug.analysis.tables import table2
from synthaug.classify.results import finished_cells
from synthaug.config import ConfigError, from_notebook, load_config
from synthaug.design import study_cells
from synthaug.io import read_csv, read_json, safetensors_digest
from synthaug.machinery.study import list_tasks, run_study
from synthaug.metrics import mean_ci

from .conftest import ROOT, smoke_config

# The smoke study with two generator seeds, cut to one arm, no sweep.
TWO = {
    "study.generator_seeds": "[0, 1]",
    "generation.arms": "[lora]",
    "study.sample_efficiency": None,
}


def test_a_generator_seed_shifts_the_lora_and_generation_seeds_and_folders(tmp_path) -> None:
    cfg = smoke_config(tmp_path, **{**TWO, "study.generator_seeds": "[0, 3]"})
    three = cfg.at_generator_seed(3)
    assert (three.generator.seed, three.generation.seed) == (3, 3)
    assert three.paths.lora == cfg.run_dir / "lora-g3"
    assert three.paths.arm("lora") == cfg.run_dir / "generated-g3"
    assert three.paths.arm("base") == cfg.run_dir / "generated-base-g3"
    assert (
        three.at_generator_seed(0) == cfg and three.at_generator_seed(0).paths.lora.name == "lora"
    )
    with pytest.raises(ConfigError, match="generator seed 2 is not in"):
        cfg.at_generator_seed(2)
    namespace = {"profile": str(ROOT / "params/smoke.yaml"), "generator_seed": 3}
    namespace["overrides"] = {"output_dir": str(tmp_path), **TWO, "study.generator_seeds": [0, 3]}
    assert from_notebook(namespace).paths.lora == three.paths.lora


def test_mix_cells_run_per_generator_seed_real_only_once(tmp_path) -> None:
    cfg = smoke_config(tmp_path, **TWO)
    cells = study_cells(cfg, 5)
    real_only = [c for c in cells if not c.n_generated]
    mixed = [c for c in cells if c.n_generated]
    assert {c.generator_seed for c in real_only} == {0}
    assert len(mixed) == 2 * len({(c.n_generated, c.n_real, c.seed) for c in mixed})
    assert "gen5-real15-g1-seed1" in {c.name for c in mixed}
    names = [t.name for t in list_tasks(cfg)]
    assert names[:2] == ["01_lora", "01_lora-g1"] and "02_generate-g1" in names


def test_two_generator_seeds_end_to_end(tmp_path) -> None:
    overrides = {"output_dir": str(tmp_path), **TWO}
    lines: list[str] = []
    run_study(ROOT / "params/smoke.yaml", overrides, echo=lines.append)
    cfg = load_config(ROOT / "params/smoke.yaml", overrides)
    one = cfg.at_generator_seed(1)
    # each seed its own LoRA (another initialisation and noise) and its own images
    digests = [safetensors_digest(c.paths.lora_weights) for c in (cfg, one)]
    assert digests[0] != digests[1]
    files = [row["file"] for row in read_csv(cfg.paths.generated_manifest)]
    assert files == [row["file"] for row in read_csv(one.paths.generated_manifest)]
    first = [np.asarray(Image.open(c.paths.generated / files[0]), float) for c in (cfg, one)]
    assert np.abs(first[0] - first[1]).max() > 10
    assert read_json(cfg.paths.provenance("01_lora-g1"))["config"]["generator"]["seed"] == 1
    # the mix's interval is over the generator seeds' means; real-only cells ran once
    mix = [
        read_json(cfg.paths.cell_metrics(f"gen10-real10{g}-seed{s}"))
        for g in ("", "-g1")
        for s in (0, 1)
    ]
    means = [np.mean([m["accuracy"] for m in mix[:2]]), np.mean([m["accuracy"] for m in mix[2:]])]
    assert not cfg.paths.cell_metrics("gen0-real10-g1-seed0").parent.exists()

    row = table2(cfg, finished_cells(cfg)).set_index("n_generated").loc[10]
    assert row.accuracy_generator_seeds == 2
    assert (row.accuracy_ci_low, row.accuracy_ci_high) == pytest.approx(
        (mean_ci(means).low, mean_ci(means).high)
    )
    assert any("over 2 generator seeds" in line for line in headline(cfg))
    page = (cfg.paths.book / "01_lora-g1.ipynb").read_text()
    assert "01 · The LoRA, generator seed 1" in page
    # a finished study reruns nothing
    assert run_study(ROOT / "params/smoke.yaml", overrides, echo=lambda _line: None) == []
