"""Device placement, tested without a GPU: the models and cached tensors live on another
device than the CPU random generators. torch's `meta` device stands in for CUDA (any op
that mixes a CPU tensor with a meta tensor raises, as CPU with CUDA would); where CUDA
exists the same tests also run on it for real."""

import pytest
import torch

from synthaug.classify.backbone import Backbone
from synthaug.classify.fine_tune import classifier_step
from synthaug.data import ImageLoader, prepare_data
from synthaug.families import family_named
from synthaug.flow import flow_matching_loss
from synthaug.generate import denoise, list_jobs, load_generator
from synthaug.lora import encode_training_set, lora_targets, train_lora
from synthaug.pretrain import base_model_source

from .conftest import load_pipeline, smoke_config

DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])
PROFILES = ["smoke", "smoke-flux2-klein"]  # one per generator family


def text_device(cfg, device: str) -> str:
    """Where the text encoder runs in these tests: on `device`, except Qwen3 on `meta`,
    which stays on the CPU (transformers' causal mask reads a value back with `.item()`,
    a sync on CUDA and impossible on `meta`), as a model-offloaded pipeline places it."""
    return "cpu" if device == "meta" and cfg.generator.family == "flux2-klein" else device


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("device", DEVICES)
def test_lora_step_encodes_and_trains_on_the_models_device(
    device, profile, tmp_path, ucmerced
) -> None:
    from peft import LoraConfig

    cfg = smoke_config(tmp_path, profile)
    family = family_named(cfg.generator.family)
    manifest = prepare_data(cfg)
    source = base_model_source(cfg)
    records = manifest.split("lora")[:4]
    loader = ImageLoader(cfg.dataset)
    encoders = load_pipeline(source, cfg.generator.family, transformer=None)
    encoders.vae.to(device)
    for encoder in family.text_encoders(encoders):
        encoder.to(text_device(cfg, device))
    cache = encode_training_set(
        cfg, encoders, [r.label for r in records], [loader(r) for r in records]
    )
    assert {v.device.type for v in cache.values()} == {device, text_device(cfg, device)}
    cache = {k: v.to(device) for k, v in cache.items()}  # as train_lora moves its cache

    transformer = family.load_transformer(source, torch.float32)
    transformer.requires_grad_(False)
    transformer.add_adapter(
        LoraConfig(r=4, target_modules=lora_targets(transformer, family.default_targets))
    )
    transformer.to(device)
    loss = flow_matching_loss(transformer, cache, torch.tensor([0, 3]), seed=7, cfg=cfg)
    loss.backward()
    trained = [p for p in transformer.parameters() if p.requires_grad]
    assert loss.device.type == device and trained
    assert all(p.grad is not None and p.grad.device.type == device for p in trained)


@pytest.fixture(scope="module", params=PROFILES)
def bf16_study(request, tmp_path_factory):
    """A smoke study with bf16 weights (the paper profile's precision) and its LoRA."""
    bf16 = {"generator.mixed_precision": "bf16"}
    cfg = smoke_config(tmp_path_factory.mktemp("bf16"), request.param, **bf16)
    train_lora(cfg)
    return cfg


@pytest.mark.parametrize("device", DEVICES)
def test_generation_step_runs_on_the_models_device_in_the_configs_dtype(device, bf16_study) -> None:
    jobs = list_jobs(bf16_study, prepare_data(bf16_study).classes)[:2]
    if text_device(bf16_study, device) != device:
        latents = _denoise_from_cpu_prompts(bf16_study, jobs, device)
    else:
        pipe, _, _ = load_generator(bf16_study, device=device)
        assert pipe.transformer.dtype == torch.bfloat16  # from the config, not from the machine
        assert {p.device.type for p in pipe.transformer.parameters()} == {device}
        latents = denoise(pipe, bf16_study, jobs, output_type="latent")
    assert latents.device.type == device and latents.shape[0] == 2


def _denoise_from_cpu_prompts(cfg, jobs, device: str) -> torch.Tensor:
    """The denoising loop on `device` from prompts the text encoder encoded on the CPU."""
    family = family_named(cfg.generator.family)
    pipe, _, _ = load_generator(cfg, device="cpu")
    encoded = family.encode_prompts(pipe, [j.prompt for j in jobs], 32)
    for name in family.text_components:
        setattr(pipe, name, None)
    pipe.to(device)
    assert pipe.transformer.dtype == torch.bfloat16
    assert {p.device.type for p in pipe.transformer.parameters()} == {device}
    text = {k: v[:-1].to(device) for k, v in encoded.items()}
    empty = {k: v[-1:].expand_as(text[k]).to(device) for k, v in encoded.items()}
    generators = [torch.Generator().manual_seed(j.seed) for j in jobs]
    return family.sample_latents(pipe, cfg, text, empty, generators)


@pytest.mark.parametrize("model", ["tiny", "tiny-timm"])  # transformers, timm
@pytest.mark.parametrize("device", DEVICES)
def test_classifier_step_and_features_on_the_models_device(
    device, model, tmp_path, ucmerced
) -> None:
    cfg = smoke_config(tmp_path, **{"classifier.model": model})
    manifest = prepare_data(cfg)
    backbone = Backbone(cfg, manifest.classes)
    backbone.model.to(device)
    loader = ImageLoader(cfg.dataset)
    images = [loader(r) for r in manifest.split("pool")[:3]]
    loss, hits = classifier_step(
        backbone.model, backbone.pixels(images), torch.tensor([0, 1, 2]), torch.Tensor.backward
    )
    assert loss.device.type == device and hits.device.type == device
    assert all(p.grad.device.type == device for p in backbone.model.classifier.parameters())
    if device == "meta":  # the forward pass ran; only copying the (data-less) result fails
        with pytest.raises(NotImplementedError, match="meta"):
            backbone.features(images, batch_size=2)
    else:
        assert backbone.features(images, batch_size=2).device.type == "cpu"
