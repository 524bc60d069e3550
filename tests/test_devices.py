"""Device placement, tested without a GPU: the models and cached tensors live on another
device than the CPU random generators. torch's `meta` device stands in for CUDA (any op
that mixes a CPU tensor with a meta tensor raises, as CPU with CUDA would); where CUDA
exists the same tests also run on it for real."""

import pytest
import torch

from synthaug.classify import Backbone, classifier_step
from synthaug.data import ImageLoader, prepare_data
from synthaug.flux import flow_matching_loss
from synthaug.generate import denoise, list_jobs, load_generator
from synthaug.lora import encode_training_set, lora_targets, train_lora
from synthaug.models import load_flux_pipeline
from synthaug.pretrain import base_model_source

from .conftest import smoke_config

DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_lora_step_encodes_and_trains_on_the_models_device(device, tmp_path, ucmerced) -> None:
    from diffusers import FluxTransformer2DModel
    from peft import LoraConfig

    cfg = smoke_config(tmp_path)
    manifest = prepare_data(cfg)
    source = base_model_source(cfg)
    records = manifest.split("lora")[:4]
    loader = ImageLoader(cfg.dataset)
    encoders = load_flux_pipeline(source, transformer=None).to(device)
    cache = encode_training_set(
        cfg, encoders, [r.label for r in records], [loader(r) for r in records]
    )
    assert {v.device.type for v in cache.values()} == {device}

    transformer = FluxTransformer2DModel.from_pretrained(source, subfolder="transformer")
    transformer.requires_grad_(False)
    transformer.add_adapter(
        LoraConfig(r=4, target_modules=lora_targets(transformer, ["attn.to_q", "proj_out"]))
    )
    transformer.to(device)
    loss = flow_matching_loss(transformer, cache, torch.tensor([0, 3]), seed=7, cfg=cfg)
    loss.backward()
    trained = [p for p in transformer.parameters() if p.requires_grad]
    assert loss.device.type == device and trained
    assert all(p.grad is not None and p.grad.device.type == device for p in trained)


@pytest.fixture(scope="module")
def bf16_study(tmp_path_factory):
    """A smoke study with bf16 weights (the paper profile's precision) and its LoRA."""
    cfg = smoke_config(tmp_path_factory.mktemp("bf16"), **{"generator.mixed_precision": "bf16"})
    train_lora(cfg)
    return cfg


@pytest.mark.parametrize("device", DEVICES)
def test_generation_step_runs_on_the_models_device_in_the_configs_dtype(device, bf16_study) -> None:
    classes = prepare_data(bf16_study).classes
    pipe, _, _ = load_generator(bf16_study, device=device)
    assert pipe.transformer.dtype == torch.bfloat16  # from the config, not from the machine
    assert {p.device.type for p in pipe.transformer.parameters()} == {device}
    latents = denoise(pipe, bf16_study, list_jobs(bf16_study, classes)[:2], output_type="latent")
    assert latents.device.type == device and latents.shape[0] == 2


@pytest.mark.parametrize("device", DEVICES)
def test_classifier_step_and_features_on_the_models_device(device, tmp_path, ucmerced) -> None:
    cfg = smoke_config(tmp_path)
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
