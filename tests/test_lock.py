"""The lock pins what was tested: every dependency of pyproject.toml, at a version it allows."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement

from .conftest import ROOT


def locked() -> dict[str, list[str]]:
    """Each package of requirements.lock and its pinned versions (one per marker fork)."""
    pins: dict[str, list[str]] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"not an exact pin: {line}"
        pins.setdefault(canonical(requirement.name), []).append(specifier.version)
    return pins


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def test_lock_pins_every_dependency_at_a_version_pyproject_allows() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    pins = locked()
    for line in wanted:
        requirement = Requirement(line)
        versions = pins.get(canonical(requirement.name))
        assert versions, f"{requirement.name} is in pyproject.toml but not in the lock"
        for version in versions:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"the lock pins {requirement.name}=={version}, which pyproject.toml's "
                f"{line!r} does not allow: regenerate the lock (README, 'Set up and run')"
            )


def test_lock_covers_torch_cuda_wheels_on_linux() -> None:
    text = (ROOT / "requirements.lock").read_text()
    pins = locked()
    assert len(pins["torch"]) == 1  # one torch for the CPU and the CUDA wheel alike
    assert "nvidia-cudnn" in text and "triton==" in text
