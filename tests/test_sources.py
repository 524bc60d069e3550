"""Where data and models come from, on a machine laid out like a user's: no ../shared."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synthaug.config import DatasetConfig, DataSource, load_config
from synthaug.data import open_source, read_manifest, scan_records
from synthaug.flow import prompt_for
from synthaug.io import read_json
from synthaug.machinery.study import run_study
from synthaug.sources import SourceError, check_model, locate, materialize

from .conftest import ROOT, UCMERCED, smoke_config

SMOKE_CLASSES = ["agricultural", "beach", "forest", "freeway", "harbor"]
# A smoke study cut to what proves the data path: one arm, one seed, no sweep.
LEAN = {"generation.arms": "[lora]", "study.seeds": "[0]", "study.sample_efficiency": None}


def copy_of_project(where: Path) -> Path:
    """The project's profiles, notebooks and book, with nothing beside them."""
    project = where / "project"
    for part in ("params", "notebooks", "book"):
        shutil.copytree(ROOT / part, project / part)
    return project


def ucmerced_like_hub_folder(where: Path, per_class: int = 16) -> Path:
    """A `save_to_disk` folder in `blanchon/UC_Merced`'s schema: one train split, `image`
    and `label`, a ClassLabel of the 21 folder names (no spaces); the smoke classes' images."""
    import datasets

    names = sorted(p.name for p in UCMERCED.iterdir() if p.is_dir())
    files = [f for c in SMOKE_CLASSES for f in sorted((UCMERCED / c).iterdir())[:per_class]]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    )
    rows = {
        "image": [{"bytes": f.read_bytes(), "path": None} for f in files],
        "label": [names.index(f.parent.name) for f in files],
    }
    folder = where / "UC_Merced"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows, features=features)}
    ).save_to_disk(str(folder))
    return folder


def cli(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`synthaug ...` in a fresh process (so HF_HUB_OFFLINE is read at import), run from
    `project` with no local data root."""
    clean = {k: v for k, v in os.environ.items() if k not in ("SYNTHAUG_DATA", "SYNTHAUG_ROOT")}
    return subprocess.run(
        [sys.executable, "-m", "synthaug.machinery.cli", *args],
        cwd=project,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_locate_prefers_path_then_local_copy_then_hub(tmp_path, monkeypatch) -> None:
    (tmp_path / "data" / "ucmerced").mkdir(parents=True)
    monkeypatch.setenv("SYNTHAUG_DATA", str(tmp_path / "data"))
    both = DataSource(local="ucmerced", hub_id="blanchon/UC_Merced")
    assert locate(both).where == str(tmp_path / "data" / "ucmerced")
    assert locate(both.model_copy(update={"path": str(UCMERCED)})).where == str(UCMERCED)
    assert locate(DataSource(local="aid", hub_id="blanchon/AID")).kind == "hub"
    with pytest.raises(SourceError, match=r"no copy of 'aid': .*data/aid does not exist"):
        locate(DataSource(local="aid"))


def test_default_data_root_is_shared_data_beside_the_project(tmp_path, monkeypatch) -> None:
    project = copy_of_project(tmp_path)
    monkeypatch.delenv("SYNTHAUG_DATA")
    monkeypatch.setenv("SYNTHAUG_ROOT", str(project))
    assert locate(DataSource(local="ucmerced", hub_id="x/y")).kind == "hub"
    (tmp_path / "shared" / "data" / "ucmerced").mkdir(parents=True)
    assert locate(DataSource(local="ucmerced", hub_id="x/y")).kind == "folder"


def test_hub_class_names_and_folder_names_give_the_same_prompts(tmp_path) -> None:
    folder = ucmerced_like_hub_folder(tmp_path, per_class=1)
    hub = smoke_config(tmp_path, **{"dataset.hub_id": str(folder), "dataset.local": None})
    local = smoke_config(tmp_path)
    hub_classes, local_classes = (
        open_source(hub.dataset).classes,
        open_source(local.dataset).classes,
    )
    assert hub_classes == local_classes == SMOKE_CLASSES
    names = sorted(p.name for p in UCMERCED.iterdir())
    assert [prompt_for(hub, c) for c in names] == [prompt_for(local, c) for c in names]
    assert prompt_for(local, "baseballdiamond") == "an aerial image of baseball diamond"


def test_class_words_replace_names_that_do_not_read_as_words(tmp_path) -> None:
    cfg = smoke_config(tmp_path, **{"dataset.class_words": {"aGrass": "grass"}})
    assert prompt_for(cfg, "aGrass") == "an aerial image of grass"
    assert prompt_for(smoke_config(tmp_path), "aGrass") == "an aerial image of a grass"
    with pytest.raises(Exception, match="class_words names 'aGrass', which is not a class"):
        run_study(
            ROOT / "params" / "smoke.yaml",
            {"output_dir": str(tmp_path), "dataset.class_words": {"aGrass": "grass"}},
            dry_run=True,
            echo=lambda _line: None,
        )


def test_materialize_streams_only_the_images_asked_for(tmp_path) -> None:
    folder = ucmerced_like_hub_folder(tmp_path, per_class=4)
    src = DataSource(hub_id=str(folder))
    out = materialize(src, tmp_path / "copy", per_class=3)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == SMOKE_CLASSES
    assert all(len(list((out / c).iterdir())) == 3 for c in SMOKE_CLASSES)
    as_folder, as_hub = DatasetConfig(path=str(out)), DatasetConfig(hub_id=str(folder))
    copied = {r.sha256 for r in scan_records(open_source(as_folder), as_folder)}
    from_hub = {r.sha256 for r in scan_records(open_source(as_hub), as_hub)}
    assert len(copied) == 15 and copied < from_hub  # the same bytes, a subset
    assert materialize(src, out, per_class=4) == out  # done once: not streamed again
    assert all(len(list((out / c).iterdir())) == 3 for c in SMOKE_CLASSES)


def test_smoke_study_runs_from_a_hub_folder_with_nothing_beside_the_project(
    tmp_path, monkeypatch
) -> None:
    project = copy_of_project(tmp_path)
    monkeypatch.delenv("SYNTHAUG_DATA")
    monkeypatch.setenv("SYNTHAUG_ROOT", str(project))
    folder = ucmerced_like_hub_folder(tmp_path)
    overrides = {"output_dir": str(tmp_path / "runs"), "dataset.hub_id": str(folder), **LEAN}
    run_study(project / "params" / "smoke.yaml", overrides, echo=lambda _line: None)
    cfg = load_config(project / "params" / "smoke.yaml", overrides)
    assert cfg.paths.book_index.exists()
    source = read_json(cfg.paths.manifest_settings)["source"]
    assert source["kind"] == "hub" and source["hub_id"] == str(folder) and source["fingerprint"]
    assert read_manifest(cfg.paths.manifest).classes == SMOKE_CLASSES
    assert read_json(cfg.paths.provenance("01_lora"))["data"] == source


def test_smoke_study_runs_from_synthaug_data_with_nothing_beside_the_project(
    tmp_path, monkeypatch
) -> None:
    project = copy_of_project(tmp_path)
    data = tmp_path / "my-data"
    for label in SMOKE_CLASSES:
        shutil.copytree(UCMERCED / label, data / "ucmerced" / label)
    monkeypatch.setenv("SYNTHAUG_DATA", str(data))
    monkeypatch.setenv("SYNTHAUG_ROOT", str(project))
    overrides = {"output_dir": str(tmp_path / "runs"), **LEAN}
    run_study(project / "params" / "smoke.yaml", overrides, echo=lambda _line: None)
    cfg = load_config(project / "params" / "smoke.yaml", overrides)
    assert cfg.paths.book_index.exists()
    source = read_json(cfg.paths.manifest_settings)["source"]
    assert source == {"kind": "folder", "folder": str(data / "ucmerced"), "local": "ucmerced"}


def test_offline_with_no_copy_the_dry_run_says_how_to_get_the_data(tmp_path) -> None:
    project = copy_of_project(tmp_path)
    done = cli(project, "run", "-f", "params/smoke.yaml", "--dry-run", HF_HUB_OFFLINE="1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    message = done.stderr
    assert message.count("error:") == 1
    for part in ("blanchon/UC_Merced", "HF_HUB_OFFLINE is set", "SYNTHAUG_DATA", "about 416 MB"):
        assert part in message, message
    assert not (project / "runs").exists()  # nothing written


def test_offline_paper_profile_names_its_model_then_its_dataset(tmp_path) -> None:
    project = copy_of_project(tmp_path)
    done = cli(project, "run", "-f", "params/paper.yaml", "--dry-run", HF_HUB_OFFLINE="1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "generator.base_model black-forest-labs/FLUX.1-dev is not in the local hub cache" in (
        done.stderr
    )
    tiny = ("-p", "generator.base_model", "tiny", "-p", "classifier.model", "tiny")
    done = cli(project, "run", "-f", "params/paper.yaml", *tiny, "--dry-run", HF_HUB_OFFLINE="1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "hub dataset blanchon/PatternNet cannot be reached (HF_HUB_OFFLINE is set)" in (
        done.stderr
    )


def test_gated_and_unknown_models_are_named_with_the_fix(monkeypatch) -> None:
    import httpx
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    def answer(status: int) -> httpx.Response:
        return httpx.Response(status, request=httpx.Request("HEAD", "https://huggingface.co/x"))

    def refuse(error: Exception):
        def download(*_args, **_kwargs):
            raise error

        return download

    monkeypatch.setattr(
        "huggingface_hub.hf_hub_download", refuse(GatedRepoError("401", response=answer(401)))
    )
    with pytest.raises(SourceError, match="is gated: accept its licence .* HF_TOKEN"):
        check_model("black-forest-labs/FLUX.1-dev", "generator.base_model", "model_index.json")
    monkeypatch.setattr(
        "huggingface_hub.hf_hub_download",
        refuse(RepositoryNotFoundError("404", response=answer(404))),
    )
    with pytest.raises(SourceError, match="nope/nothing is not on the hub"):
        check_model("nope/nothing", "classifier.model", "config.json")


def test_unknown_hub_dataset_is_named(monkeypatch) -> None:
    import datasets

    def missing(*_args, **_kwargs):
        raise datasets.exceptions.DatasetNotFoundError("Dataset 'nope/nothing' doesn't exist")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(SourceError, match="hub dataset nope/nothing: .*Check the id"):
        open_source(DataSource(hub_id="nope/nothing"))
