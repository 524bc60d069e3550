import pytest
import torch
from safetensors.torch import load_file

from synthaug.lora import WEIGHTS, Plan, _save_lora, base_model_source, lora_dir, train_lora
from synthaug.models import load_flux_pipeline

from .conftest import smoke_config


def test_plan_repeats_every_image_per_epoch() -> None:
    plan = Plan(n_images=5, repeats=3, batch_size=4, epochs=2)
    assert plan.steps_per_epoch == 4 and plan.total_steps == 8
    visits = torch.cat(plan.order(seed=0, epoch=0))
    assert sorted(visits.tolist()) == sorted(list(range(5)) * 3)
    assert not torch.equal(visits, torch.cat(plan.order(seed=0, epoch=1)))
    assert torch.equal(visits, torch.cat(plan.order(seed=0, epoch=0)))


def test_stopped_and_resumed_run_ends_with_the_same_lora(tmp_path, ucmerced) -> None:
    whole = smoke_config(tmp_path / "whole")
    train_lora(whole)
    split = smoke_config(tmp_path / "split")
    assert train_lora(split, stop_after=7) == {"stopped_at": 7, "total_steps": 20}
    assert not (lora_dir(split) / WEIGHTS).exists()
    assert train_lora(split, stop_after=6)["stopped_at"] == 13  # crosses an epoch boundary
    summary = train_lora(split)
    assert summary["steps"] == 20
    a = load_file(lora_dir(whole) / WEIGHTS)
    b = load_file(lora_dir(split) / WEIGHTS)
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert (lora_dir(whole) / "loss.csv").read_text() == (lora_dir(split) / "loss.csv").read_text()
    assert sorted(p.name for p in (lora_dir(split) / "samples").iterdir()) == [
        "epoch_001.png",
        "epoch_002.png",
    ]


def test_lora_adapts_the_blocks_not_the_final_projection(tmp_path, ucmerced) -> None:
    cfg = smoke_config(tmp_path)
    train_lora(cfg)
    modules = {k.rsplit(".lora_", 1)[0] for k in load_file(lora_dir(cfg) / WEIGHTS)}
    assert "transformer.single_transformer_blocks.0.proj_out" in modules
    assert "transformer.transformer_blocks.0.attn.to_q" in modules
    assert "transformer.proj_out" not in modules  # the final output projection stays frozen
    assert all(".transformer_blocks." in m or ".single_transformer_blocks." in m for m in modules)


def test_finished_run_is_reused_and_other_settings_refused(tmp_path, ucmerced) -> None:
    cfg = smoke_config(tmp_path)
    first = train_lora(cfg)
    stamp = (lora_dir(cfg) / WEIGHTS).stat().st_mtime_ns
    assert train_lora(cfg) == first
    assert (lora_dir(cfg) / WEIGHTS).stat().st_mtime_ns == stamp
    with pytest.raises(RuntimeError, match="other settings; give the study a new `name`"):
        train_lora(smoke_config(tmp_path, **{"generator.lora.rank": 2}))


def generate(pipe, cfg) -> torch.Tensor:
    return torch.from_numpy(
        pipe(
            "an aerial image of beach",
            height=32,
            width=32,
            num_inference_steps=3,
            max_sequence_length=32,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images[0]
    )


def test_stock_load_lora_weights_changes_images_only_when_trained(tmp_path, ucmerced) -> None:
    cfg = smoke_config(
        tmp_path, **{"generator.optimizer": "adamw", "generator.learning_rate": 1e-2}
    )
    train_lora(cfg)
    source = base_model_source(cfg)
    base = generate(load_flux_pipeline(source), cfg)

    trained = load_flux_pipeline(source)
    trained.load_lora_weights(lora_dir(cfg) / WEIGHTS)
    assert (generate(trained, cfg) - base).abs().max() > 1e-3

    from peft import LoraConfig

    untrained = load_flux_pipeline(source)
    untrained.transformer.add_adapter(
        LoraConfig(
            r=4,
            lora_alpha=4,
            init_lora_weights="gaussian",
            target_modules=["attn.to_q", "attn.to_k"],
        )
    )
    _save_lora(untrained.transformer, tmp_path)
    fresh = load_flux_pipeline(source)
    fresh.load_lora_weights(tmp_path / WEIGHTS)
    torch.testing.assert_close(generate(fresh, cfg), base)


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
    assert (lora_dir(cfg) / "cache.safetensors").is_file()
    assert len(loads) == 1
