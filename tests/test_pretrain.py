"""The pretrained tiny base belongs to its own settings: one cached base for every dataset."""

from synthaug import pretrain
from synthaug.io import read_json
from synthaug.pretrain import base_model_source

from .conftest import AID, ROOT, load_pipeline, smoke_config

# A pretraining small enough for a test: 2 AID images a class, 2 steps each.
PRETRAIN = {
    "generator.pretrain.data.path": str(AID),
    "generator.pretrain.max_per_class": 2,
    "generator.pretrain.vae_steps": 2,
    "generator.pretrain.transformer_steps": 2,
    "generator.pretrain.batch_size": 4,
    "generator.pretrain.caption_dropout": 0.5,
    "generator.pretrain.train_text_encoders": True,
}


def test_two_datasets_share_one_pretrained_base(tmp_path, ucmerced, monkeypatch) -> None:
    builds = []
    original = pretrain.load_images
    monkeypatch.setattr(pretrain, "load_images", lambda cfg: builds.append(1) or original(cfg))
    on_ucmerced = smoke_config(tmp_path / "a", **PRETRAIN)
    on_aid = smoke_config(
        tmp_path / "b",
        **PRETRAIN,
        **{"dataset.path": str(AID), "dataset.classes": ["Desert", "Mountain", "Pond"]},
        **{"generation.prompt_template": "satellite view, {class_name}"},
    )
    first = base_model_source(on_ucmerced)
    assert base_model_source(on_aid) == first
    assert len(builds) == 1  # pretrained once, reused
    record = read_json(f"{first}/pretraining.json")
    assert record["images"] == 60 and "an aerial image of dense residential" in record["captions"]
    changed = smoke_config(tmp_path / "c", **PRETRAIN, **{"generator.pretrain.seed": 1})
    assert base_model_source(changed) != first and len(builds) == 2
    # the VAE's saved shift and scale map its latents of the pretraining images to mean 0,
    # standard deviation 1, as FLUX.1-dev's do
    vae = load_pipeline(first).vae
    latents = pretrain.encode_all(vae, pretrain.load_images(on_ucmerced)[0])
    scaled = (latents - vae.config.shift_factor) * vae.config.scaling_factor
    assert abs(scaled.mean().item()) < 1e-4 and abs(scaled.std().item() - 1) < 1e-4


def test_vae_crops_are_seeded_windows_of_the_batch() -> None:
    import pytest
    import torch

    images = torch.arange(2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    crop = pretrain.random_crop(images, 4, torch.Generator().manual_seed(0))
    assert crop.shape == (2, 3, 4, 4)
    again = pretrain.random_crop(images, 4, torch.Generator().manual_seed(0))
    assert torch.equal(crop, again)
    # a window: rows and columns contiguous in the original
    top, left = divmod(int(crop[0, 0, 0, 0]), 8)
    assert torch.equal(crop, images[..., top : top + 4, left : left + 4])
    assert pretrain.random_crop(images, None, torch.Generator()) is images
    with pytest.raises(ValueError, match="vae_crop 16 exceeds the 8x8"):
        pretrain.random_crop(images, 16, torch.Generator())


CHILD = """
import sys
from synthaug.config import load_config
from synthaug.io import safetensors_digest
from synthaug.pretrain import base_model_source
cfg = load_config("params/smoke.yaml", dict(arg.split("=") for arg in sys.argv[1:]))
base = base_model_source(cfg)
print(safetensors_digest(f"{base}/transformer/diffusion_pytorch_model.safetensors"))
"""


def test_the_same_machine_pretrains_the_same_base_bit_for_bit_under_load(tmp_path) -> None:
    """Each in a fresh process with an empty cache, one beside a busy CPU: same bits."""
    import os
    import subprocess
    import sys

    overrides = [f"{k}={v}" for k, v in PRETRAIN.items()]

    def digest(cache: str, loaded: bool) -> str:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
        try:
            done = subprocess.run(
                [sys.executable, "-c", CHILD, *overrides],
                cwd=ROOT,
                env={**os.environ, "SYNTHAUG_CACHE": cache},
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            if busy is not None:
                busy.kill()
        return done.stdout.split()[-1]

    assert digest(str(tmp_path / "a"), False) == digest(str(tmp_path / "b"), True)


class Stop(Exception):
    """Raised from inside the pretraining to stop it as a kill would."""


def _digest(folder: str) -> str:
    from synthaug.io import safetensors_digest

    return "".join(
        safetensors_digest(f"{folder}/{part}")
        for part in (
            "transformer/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors",
        )
    )


def test_a_stopped_pretraining_resumes_to_the_same_base(tmp_path, monkeypatch) -> None:
    """Stopped once in the VAE phase and once in the transformer's, with a checkpoint
    after every step: the resumed base is bit for bit the one that never stopped."""
    import pytest

    steps = {
        **PRETRAIN,
        "generator.pretrain.vae_steps": 4,
        "generator.pretrain.transformer_steps": 4,
    }
    monkeypatch.setenv("SYNTHAUG_CACHE", str(tmp_path / "straight"))
    straight = _digest(base_model_source(smoke_config(tmp_path / "a", **steps)))

    monkeypatch.setenv("SYNTHAUG_CACHE", str(tmp_path / "stopped"))
    monkeypatch.setattr(pretrain, "CHECKPOINT_SECONDS", 0.0)
    real_step, calls = pretrain._step, []

    def stopping_step(*args) -> None:
        calls.append(1)
        if len(calls) in (3, 7):  # in VAE step 3; after a resume, transformer step 2
            raise Stop
        real_step(*args)

    monkeypatch.setattr(pretrain, "_step", stopping_step)
    cfg = smoke_config(tmp_path / "b", **steps)
    for _ in range(2):
        with pytest.raises(Stop):
            base_model_source(cfg)
    checkpoints = list((tmp_path / "stopped").glob(".*.checkpoint.safetensors"))
    assert len(checkpoints) == 1
    resumed = base_model_source(cfg)
    assert _digest(resumed) == straight
    assert not checkpoints[0].exists()  # removed once the base is saved
    record = read_json(f"{resumed}/pretraining.json")
    assert len(record["vae_losses"]) == len(record["transformer_losses"]) == 4
