"""Shared fixtures: the real UC Merced images beside the repo, a per-session model cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthaug.config import StudyConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
UCMERCED = ROOT.parent / "shared" / "data" / "ucmerced"
AID = ROOT.parent / "shared" / "data" / "aid"


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
    if not UCMERCED.is_dir():
        pytest.fail(f"real UC Merced images are expected at {UCMERCED} (../shared/data/ucmerced)")
    return UCMERCED


def smoke_config(output_dir: Path, **overrides: object) -> StudyConfig:
    """The smoke profile writing under `output_dir`, with dotted overrides."""
    return load_config(ROOT / "params" / "smoke.yaml", {"output_dir": str(output_dir), **overrides})
