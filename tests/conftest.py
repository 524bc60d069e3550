"""Shared fixtures: real aerial images found as the study finds them, a per-session model cache.

The images come from `$SYNTHAUG_DATA` (default `../shared/data` beside the project), else
they are streamed once from the hub into `~/.cache/synthaug/test-data` (only the images
the tests use). Where neither works, the session stops with one message saying how to
provide them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from synthaug.config import StudyConfig, load_config
from synthaug.sources import DATA_ENV, SourceError, data_root, materialize

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SYNTHAUG_ROOT", str(ROOT))
TEST_DATA = Path(os.environ.get("SYNTHAUG_TEST_DATA", "~/.cache/synthaug/test-data")).expanduser()
AID_PER_CLASS = 20  # the most any test reads from one AID class


def local_data() -> Path | None:
    """The data root holding `ucmerced/` and `aid/`, found by the study's own rule."""
    root = data_root()
    return root if root and (root / "ucmerced").is_dir() and (root / "aid").is_dir() else None


DATA = local_data() or TEST_DATA
os.environ[DATA_ENV] = str(DATA)


def pytest_configure(config: pytest.Config) -> None:
    """With no local copy, stream the tests' images from the hub once, or stop the session
    with one message that says how to provide them."""
    if DATA != TEST_DATA:
        return
    profile = load_config(ROOT / "params" / "ucmerced-cpu.yaml")
    assert profile.generator.pretrain is not None
    try:
        materialize(profile.dataset, TEST_DATA / "ucmerced")
        materialize(profile.generator.pretrain.data, TEST_DATA / "aid", AID_PER_CLASS)
    except SourceError as error:
        pytest.exit(
            f"the tests need real UC Merced and AID images and found none: {error}\n"
            f"Set {DATA_ENV} to a folder holding ucmerced/<class>/<image> and "
            "aid/<class>/<image>, or run once with internet access (they are then streamed "
            f"from the hub into {TEST_DATA})",
            returncode=3,
        )


UCMERCED = DATA / "ucmerced"
AID = DATA / "aid"


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tiny models are built once per test session, in a temp cache, never in ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SYNTHAUG_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("SYNTHAUG_ROOT", str(ROOT))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def ucmerced() -> Path:
    return UCMERCED


def smoke_config(output_dir: Path, profile: str = "smoke", **overrides: object) -> StudyConfig:
    """A smoke profile (`smoke`, `smoke-flux2-klein`) writing under `output_dir`, with
    dotted overrides."""
    return load_config(
        ROOT / "params" / f"{profile}.yaml", {"output_dir": str(output_dir), **overrides}
    )


def load_pipeline(source: str | Path, family: str = "flux1", **components: object):
    """A generator family's pipeline in float32, as the stages load it."""
    import torch

    from synthaug.families import family_named

    return family_named(family).load_pipeline(source, torch.float32, **components)


# The smoke study made small (one classifier seed, one mix, one arm, no sweep): 8 tasks,
# for the tests that run it another way (printed tasks, a SLURM cluster) and compare.
SMALL_SMOKE = {
    "study.seeds": "[0]",
    "study.generated_shares": "[0.5]",
    "generation.arms": "[lora]",
    "study.sample_efficiency": "null",
}


@pytest.fixture(scope="session")
def small_local_study(tmp_path_factory: pytest.TempPathFactory, ucmerced: Path) -> StudyConfig:
    """The small smoke study run here by `synthaug run` up to its cells: the reference."""
    from synthaug.machinery.study import run_study

    out = tmp_path_factory.mktemp("small-local")
    overrides = {"output_dir": str(out), **SMALL_SMOKE}
    run_study(ROOT / "params/smoke.yaml", overrides, stage="classify", echo=lambda _: None)
    return smoke_config(out, **SMALL_SMOKE)


def cell_results(cfg: StudyConfig) -> dict[str, dict]:
    """Every cell's metrics.json, without its timings: equal runs give equal dicts."""
    import json

    results = {}
    for folder in sorted(cfg.paths.cells.iterdir()):
        metrics = json.loads(cfg.paths.cell_metrics(folder.name).read_text())
        assert metrics.pop("timings")
        results[folder.name] = metrics
    return results


def beach_image(pipe):
    """A FLUX.1 pipeline's 32 px image of one prompt and seed, as a tensor."""
    import torch

    out = pipe(
        "an aerial image of beach",
        height=32,
        width=32,
        num_inference_steps=3,
        max_sequence_length=32,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return torch.from_numpy(out.images[0])
