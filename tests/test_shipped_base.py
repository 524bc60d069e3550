"""The CPU profile's base ships in the repository: its files match its card, stock
diffusers loads it, any copy of the profile finds it, and its recipe still runs."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from synthaug.config import load_config
from synthaug.machinery.cards import base_licence
from synthaug.machinery.ship import (
    ShipError,
    card_hashes,
    card_metadata,
    file_hashes,
    verify_base,
)
from synthaug.pretrain import base_model_source
from synthaug.sources import CHECKOUT

from .conftest import AID, ROOT, load_pipeline

PROFILE = ROOT / "params" / "ucmerced-cpu.yaml"
SHIPPED = ROOT / load_config(PROFILE).generator.base_model


def test_the_profile_names_the_shipped_base_and_keeps_the_recipe() -> None:
    cfg = load_config(PROFILE)
    assert cfg.generator.base_model == "models/tiny-flux1-aid"
    assert cfg.generator.pretrain is not None  # `-p generator.base_model tiny` rebuilds it
    assert SHIPPED.is_dir()


def test_the_shipped_base_is_the_files_its_card_names() -> None:
    verify_base(SHIPPED)
    weights = [p for p in SHIPPED.rglob("*") if p.is_file() and p.suffix not in (".json", ".md")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in SHIPPED.rglob("*")) < 40e6
    meta = card_metadata(SHIPPED)
    assert meta["library_name"] == "diffusers" and meta["datasets"] == ["blanchon/AID"]
    # an exported LoRA's card carries the shipped base's licence, from this card
    assert base_licence("models/tiny-flux1-aid") == {
        "license": "other",
        "license_name": "research-use-aid",
    }
    card = (SHIPPED / "README.md").read_text()
    for fact in ("synthaug pretrain -f params/ucmerced-cpu.yaml", "minutes", "machine", "AID"):
        assert fact in card


def test_stock_diffusers_loads_the_shipped_base() -> None:
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(SHIPPED)
    image = pipe(
        "an aerial image of forest",
        height=64,
        width=64,
        num_inference_steps=2,
        guidance_scale=1.0,
        max_sequence_length=32,
        output_type="np",
    ).images[0]
    assert image.shape == (64, 64, 3) and image.std() > 0.01


def test_a_copy_of_the_profile_elsewhere_finds_the_shipped_base(tmp_path, monkeypatch) -> None:
    """Saved outside the project, pointed at another image folder, run from a folder with
    no params/: the relative base_model still means the checkout's models/ folder."""
    raw = yaml.safe_load(PROFILE.read_text())
    raw["dataset"] = {"path": str(AID), "classes": ["Desert", "Mountain", "Pond"]}
    copy = tmp_path / "elsewhere" / "my-study.yaml"
    copy.parent.mkdir()
    copy.write_text(yaml.safe_dump(raw))
    monkeypatch.delenv("SYNTHAUG_ROOT", raising=False)
    monkeypatch.chdir(copy.parent)
    cfg = load_config(copy)
    assert base_model_source(cfg) == str(CHECKOUT / "models" / "tiny-flux1-aid")


def test_the_recipe_runs_at_a_few_steps_and_writes_a_checked_card(tmp_path) -> None:
    target = tmp_path / "models" / "tiny-test"
    steps = {
        "generator.pretrain.data.path": str(AID),
        "generator.pretrain.max_per_class": 2,
        "generator.pretrain.vae_steps": 2,
        "generator.pretrain.transformer_steps": 2,
        "generator.pretrain.batch_size": 4,
    }
    command = [sys.executable, "-m", "synthaug.machinery.cli", "pretrain", "-f", str(PROFILE)]
    for key, value in steps.items():
        command += ["-p", key, str(value)]
    env = {"SYNTHAUG_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [*command, "--to", str(target)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    verify_base(target)
    assert card_hashes(target) == file_hashes(target)
    assert "transformer/diffusion_pytorch_model.safetensors" in card_hashes(target)
    load_pipeline(target)
    again = subprocess.run(
        [*command, "--to", str(target)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert again.returncode == 2 and "exists" in again.stderr  # never overwritten
    tampered = tmp_path / "tampered"
    shutil.copytree(target, tampered)
    (tampered / "model_index.json").write_text("{}")
    with pytest.raises(ShipError, match="model_index.json"):
        verify_base(tampered)
