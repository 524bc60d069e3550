import pytest
import torch
from safetensors.torch import load_file

from synthaug.families import family_named
from synthaug.io import SettingsMismatch, safetensors_digest
from synthaug.lora import StepSchedule, _save_lora, lora_devices, train_lora
from synthaug.paths import LORA_WEIGHTS
from synthaug.pretrain import base_model_source

from .conftest import beach_image, load_pipeline, smoke_config


def test_plan_repeats_every_image_per_epoch() -> None:
    schedule = StepSchedule(n_images=5, repeats=3, batch_size=4, epochs=2)
    assert schedule.steps_per_epoch == 4 and schedule.total_steps == 8
    visits = torch.cat(schedule.order(seed=0, epoch=0))
    assert sorted(visits.tolist()) == sorted(list(range(5)) * 3)
    assert not torch.equal(visits, torch.cat(schedule.order(seed=0, epoch=1)))
    assert torch.equal(visits, torch.cat(schedule.order(seed=0, epoch=0)))


@pytest.mark.parametrize(("batch", "expected"), [(1, ["0"]), (2, ["0", "1"]), (6, ["0", "1", "2"])])
def test_the_lora_trains_on_as_many_gpus_as_split_its_batch(
    tmp_path, monkeypatch, batch, expected
) -> None:
    monkeypatch.setattr("synthaug.models.visible_gpus", lambda: ["0", "1", "2", "3"])
    cfg = smoke_config(tmp_path, **{"generator.batch_size": batch})
    assert lora_devices(cfg) == expected  # the paper's batch of 1: one GPU, not a crash


def test_stopped_and_resumed_run_ends_with_the_same_lora(tmp_path, ucmerced) -> None:
    whole = smoke_config(tmp_path / "whole")
    train_lora(whole)
    split = smoke_config(tmp_path / "split")
    assert train_lora(split, stop_after=7) == {"stopped_at": 7, "total_steps": 20}
    assert not (split.paths.lora_weights).exists()
    assert train_lora(split, stop_after=6)["stopped_at"] == 13  # crosses an epoch boundary
    summary = train_lora(split)
    assert summary["steps"] == 20
    a = load_file(whole.paths.lora_weights)
    b = load_file(split.paths.lora_weights)
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert (whole.paths.lora / "loss.csv").read_text() == (
        split.paths.lora / "loss.csv"
    ).read_text()
    assert sorted(p.name for p in (split.paths.lora / "samples").iterdir()) == [
        "epoch_001.png",
        "epoch_002.png",
    ]


def test_lora_adapts_the_blocks_not_the_final_projection(tmp_path, ucmerced) -> None:
    cfg = smoke_config(tmp_path)
    train_lora(cfg)
    modules = {k.rsplit(".lora_", 1)[0] for k in load_file(cfg.paths.lora_weights)}
    assert "transformer.single_transformer_blocks.0.proj_out" in modules
    assert "transformer.transformer_blocks.0.attn.to_q" in modules
    assert "transformer.proj_out" not in modules  # the final output projection stays frozen
    assert all(".transformer_blocks." in m or ".single_transformer_blocks." in m for m in modules)


def test_finished_run_is_reused_and_other_settings_refused(tmp_path, ucmerced) -> None:
    cfg = smoke_config(tmp_path)
    first = train_lora(cfg)
    stamp = (cfg.paths.lora_weights).stat().st_mtime_ns
    assert train_lora(cfg) == first
    assert (cfg.paths.lora_weights).stat().st_mtime_ns == stamp
    with pytest.raises(SettingsMismatch, match=r"other settings \(config_hash, generator differ"):
        train_lora(smoke_config(tmp_path, **{"generator.lora.rank": 2}))


def test_stock_load_lora_weights_changes_images_only_when_trained(tmp_path, ucmerced) -> None:
    cfg = smoke_config(
        tmp_path, **{"generator.optimizer": "adamw", "generator.learning_rate": 1e-2}
    )
    train_lora(cfg)
    source = base_model_source(cfg)
    base = beach_image(load_pipeline(source))

    trained = load_pipeline(source)
    trained.load_lora_weights(cfg.paths.lora_weights)
    assert (beach_image(trained) - base).abs().max() > 1e-3

    from peft import LoraConfig

    untrained = load_pipeline(source)
    untrained.transformer.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            init_lora_weights="gaussian",
            target_modules=["attn.to_q", "attn.to_k"],
        )
    )
    _save_lora(family_named("flux1"), untrained.transformer, tmp_path)
    fresh = load_pipeline(source)
    fresh.load_lora_weights(tmp_path / LORA_WEIGHTS)
    torch.testing.assert_close(beach_image(fresh), base)


def test_loss_goes_down_on_real_images(tmp_path, ucmerced) -> None:
    cfg = smoke_config(
        tmp_path,
        **{
            "generator.optimizer": "adamw",
            "generator.epochs": 6,
            "generator.learning_rate": 3e-3,
            "generator.lora.rank": 8,
        },
    )
    losses = [e["loss"] for e in train_lora(cfg)["epoch_loss"]]
    assert len(losses) == 6
    assert losses[-1] < 0.9 * losses[0]


def test_encoding_loads_no_transformer(tmp_path, ucmerced, monkeypatch) -> None:
    """The VAE and text encoders encode the cache alone; the transformer is loaded once,
    for training (on FLUX.1-dev a second load is 24 GB of GPU memory)."""
    from diffusers import FluxTransformer2DModel

    loads = []
    original = FluxTransformer2DModel.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(FluxTransformer2DModel, "from_pretrained", classmethod(counting))
    cfg = smoke_config(tmp_path)
    train_lora(cfg)
    assert (cfg.paths.lora / "cache.safetensors").is_file()
    assert len(loads) == 1


SAVE_A_LORA = """
import sys, torch
from peft import LoraConfig
from synthaug.config import TinyFluxConfig
from synthaug.families import family_named
from synthaug.lora import _save_lora, lora_targets
from synthaug.pretrain import tiny_base_dir
source = tiny_base_dir("flux1", TinyFluxConfig())
transformer = family_named("flux1").load_pipeline(source, torch.float32).transformer
torch.manual_seed(0)
targets = lora_targets(transformer, ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"])
transformer.add_adapter(LoraConfig(r=2, init_lora_weights="gaussian", target_modules=targets))
_save_lora(family_named("flux1"), transformer, __import__("pathlib").Path(sys.argv[1]))
"""


def test_a_saved_lora_has_the_same_digest_in_every_process(tmp_path) -> None:
    """The generated set records the LoRA's digest, and every classifier cell's key holds
    it: the same LoRA must hash the same in any process (peft keeps targets in a set,
    ordered by Python's hash seed; safetensors writes its metadata in hash order too)."""
    import os
    import subprocess
    import sys

    for seed in ("1", "2"):
        (tmp_path / seed).mkdir()
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", SAVE_A_LORA, tmp_path / seed], env=env, check=True)
    first, second = (safetensors_digest(tmp_path / s / LORA_WEIGHTS) for s in ("1", "2"))
    assert first == second


def test_two_processes_train_the_lora_one_would(tmp_path, ucmerced) -> None:
    """`study.devices: 2` on a CPU: two data-parallel processes (gloo), each with half of
    every batch, the noise the whole batch drew for it: the loss curve of one process at
    the same effective batch, and a LoRA the stock loader reads."""
    from synthaug.io import read_json

    one = smoke_config(tmp_path / "one")
    train_lora(one)
    two = smoke_config(tmp_path / "two", **{"study.devices": 2})
    assert train_lora(two)["processes"] == 2
    alone, together = (
        [e["loss"] for e in read_json(c.paths.lora_summary)["epoch_loss"]] for c in (one, two)
    )
    assert together == pytest.approx(alone, rel=0.02)
    first = [(c.paths.lora / "loss.csv").read_text().splitlines()[1] for c in (one, two)]
    assert float(first[1].split(",")[2]) == pytest.approx(float(first[0].split(",")[2]), rel=1e-4)
    pipe = load_pipeline(base_model_source(two))
    pipe.load_lora_weights(two.paths.lora_weights)
    assert pipe.get_list_adapters()["transformer"]  # the stock loader took it


def test_tensorboard_holds_the_loss_learning_rate_and_grids(tmp_path, ucmerced) -> None:
    """`generator.report_to: tensorboard`: accelerate's tracker writes each step's loss and
    learning rate and each epoch's sample grid; the LoRA is the one an untracked run trains."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    plain = smoke_config(tmp_path / "plain")
    train_lora(plain)
    cfg = smoke_config(tmp_path / "tracked", **{"generator.report_to": "tensorboard"})
    train_lora(cfg)
    run = cfg.paths.lora / "logs" / "synthaug-lora"  # the run's events (hparams below it)
    logged = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
    assert {"loss", "learning_rate"} <= set(logged.Tags()["scalars"])
    losses = [e.value for e in logged.Scalars("loss")]
    rows = (cfg.paths.lora / "loss.csv").read_text().splitlines()[1:]
    assert losses == pytest.approx([float(r.split(",")[2]) for r in rows])
    assert [e.step for e in logged.Images("samples")] == [10, 20]  # one grid an epoch
    assert safetensors_digest(cfg.paths.lora_weights) == safetensors_digest(
        plain.paths.lora_weights
    )
