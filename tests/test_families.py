"""FLUX.2 [klein] works as FLUX.1 does: its tiny stand-in, LoRA, generation and checks."""

import pytest
import torch
from safetensors.torch import load_file

from synthaug.config import TinyFluxConfig
from synthaug.data import prepare_data
from synthaug.families import FAMILIES, FamilyMismatchError, family_named
from synthaug.generate import generate_images, list_jobs, regenerate_one
from synthaug.io import read_csv
from synthaug.lora import train_lora
from synthaug.pretrain import base_model_source, tiny_base_dir

from .conftest import load_pipeline, smoke_config

KLEIN = "smoke-flux2-klein"


def test_tiny_klein_is_the_klein_architecture_saved_and_loaded_as_the_hub_ones() -> None:
    from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import Qwen2TokenizerFast, Qwen3ForCausalLM

    pipe = load_pipeline(tiny_base_dir("flux2-klein", TinyFluxConfig()), "flux2-klein")
    assert isinstance(pipe, Flux2KleinPipeline) and not pipe.config.is_distilled
    assert isinstance(pipe.transformer, Flux2Transformer2DModel)
    assert isinstance(pipe.vae, AutoencoderKLFlux2)
    assert isinstance(pipe.text_encoder, Qwen3ForCausalLM)
    assert isinstance(pipe.tokenizer, Qwen2TokenizerFast)
    assert "<think>" in pipe.tokenizer.apply_chat_template(
        [{"role": "user", "content": "an aerial image of beach"}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    image = family_named("flux2-klein").generate(
        pipe, smoke_config(".", KLEIN), ["an aerial image of beach"], [torch.Generator()], "np"
    )[0]
    assert image.shape == (32, 32, 3)


def test_a_base_of_another_family_is_refused_with_the_fix() -> None:
    flux1 = tiny_base_dir("flux1", TinyFluxConfig())
    with pytest.raises(
        FamilyMismatchError, match="holds a FluxPipeline: set generator.family: flux1"
    ):
        family_named("flux2-klein").load_transformer(flux1, torch.float32)


def test_every_family_implements_the_interface() -> None:
    assert sorted(FAMILIES) == ["flux1", "flux2-klein"]
    for family in FAMILIES.values():
        assert family.default_targets and family.text_keys[0] == "prompt_embeds"


@pytest.fixture(scope="module")
def klein(tmp_path_factory):
    """The klein smoke study with its LoRA trained once for this module."""
    cfg = smoke_config(tmp_path_factory.mktemp("klein"), KLEIN)
    train_lora(cfg)
    return cfg


def test_klein_lora_stopped_and_resumed_is_the_lora_of_one_run(klein, tmp_path) -> None:
    split = smoke_config(tmp_path, KLEIN)
    assert train_lora(split, stop_after=7)["stopped_at"] == 7
    assert train_lora(split, stop_after=6)["stopped_at"] == 13  # crosses an epoch boundary
    train_lora(split)
    a, b = load_file(klein.paths.lora_weights), load_file(split.paths.lora_weights)
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    loss = [(c.paths.lora / "loss.csv").read_text() for c in (klein, split)]
    assert loss[0] == loss[1]
    modules = {k.rsplit(".lora_", 1)[0] for k in a}
    assert "transformer.single_transformer_blocks.0.attn.to_qkv_mlp_proj" in modules
    assert "transformer.transformer_blocks.0.ff.linear_in" in modules
    assert "transformer.proj_out" not in modules


def _image(pipe) -> torch.Tensor:
    out = pipe(
        prompt="an aerial image of beach",
        height=32,
        width=32,
        num_inference_steps=3,
        guidance_scale=2.0,
        max_sequence_length=32,
        text_encoder_out_layers=(1, 1, 2),
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return torch.from_numpy(out.images[0])


def test_stock_klein_pipeline_loads_the_lora_and_it_changes_the_images(tmp_path) -> None:
    cfg = smoke_config(
        tmp_path, KLEIN, **{"generator.optimizer": "adamw", "generator.learning_rate": 1e-2}
    )
    train_lora(cfg)
    from diffusers import Flux2KleinPipeline

    source = base_model_source(cfg)
    base = _image(Flux2KleinPipeline.from_pretrained(source))
    trained = Flux2KleinPipeline.from_pretrained(source)
    trained.load_lora_weights(cfg.paths.lora_weights)
    assert trained.get_list_adapters()["transformer"]
    assert (_image(trained) - base).abs().max() > 1e-3


def test_klein_generation_is_seeded_sharded_and_resumable(klein, tmp_path) -> None:
    import shutil

    sharded = smoke_config(tmp_path, KLEIN)
    shutil.copytree(klein.paths.lora, sharded.paths.lora)
    whole = generate_images(klein)
    assert whole["complete"] and whole["generated_now"] == klein.generation.count
    assert generate_images(klein)["generated_now"] == 0  # a rerun makes nothing
    for shard in ("1/2", "0/2"):
        generate_images(sharded, shard=shard)
    rows = [read_csv(c.paths.arm_manifest("lora")) for c in (klein, sharded)]
    assert rows[0] == rows[1] and {r["family"] for r in rows[0]} == {"flux2-klein"}
    job = list_jobs(klein, prepare_data(klein).classes)[3]
    assert (
        regenerate_one(klein, job.label, job.index)
        == (klein.paths.arm("lora") / job.file).read_bytes()
    )
    base = generate_images(klein, arm="base")
    assert base["complete"]
    # the LoRA changes what the same prompts and seeds make: somewhere in the set, since
    # the smoke LoRA moves the tiny images little, most of them rounding to the same PNG
    # either way (on an AMD EPYC 1 of 20 changed, not the one an Intel Xeon changed)
    lora_set, base_set = klein.paths.arm("lora"), klein.paths.arm("base")
    images = sorted(p.relative_to(lora_set) for p in lora_set.rglob("*.png"))
    changed = [f for f in images if (lora_set / f).read_bytes() != (base_set / f).read_bytes()]
    assert len(images) == klein.generation.count and changed
