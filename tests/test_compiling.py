"""Regional compilation (`*.compile: regional`) on the CPU's inductor: the tiny models'
repeated blocks compiled give eager's loss and logits."""

from __future__ import annotations

import pytest
import torch

from synthaug.classify.backbone import Backbone
from synthaug.data import ImageLoader, prepare_data
from synthaug.flow import flow_matching_loss
from synthaug.lora import encode_training_set, lora_targets
from synthaug.pretrain import base_model_source
from synthaug.runtime.compiling import compile_blocks, repeated_blocks

from .conftest import load_pipeline, smoke_config


def _lora_transformer(source: str):
    from diffusers import FluxTransformer2DModel
    from peft import LoraConfig

    transformer = FluxTransformer2DModel.from_pretrained(source, subfolder="transformer")
    transformer.requires_grad_(False)
    torch.manual_seed(0)
    targets = lora_targets(transformer, ["attn.to_q", "attn.to_k", "attn.to_v", "proj_out"])
    transformer.add_adapter(LoraConfig(r=4, init_lora_weights="gaussian", target_modules=targets))
    return transformer


def test_compiled_lora_blocks_train_with_eagers_loss(tmp_path, ucmerced) -> None:
    cfg = smoke_config(tmp_path)
    records = prepare_data(cfg).split("lora")[:4]
    source = base_model_source(cfg)
    encoders = load_pipeline(source, transformer=None)
    loader = ImageLoader(cfg.dataset)
    cache = encode_training_set(
        cfg, encoders, [r.label for r in records], [loader(r) for r in records]
    )
    curves = []
    for mode in ("none", "regional"):
        transformer = _lora_transformer(source)
        blocks = compile_blocks(transformer, mode)
        assert blocks == (0 if mode == "none" else len(repeated_blocks(transformer)))
        trained = [p for p in transformer.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trained, lr=0.5)
        losses = []
        for step in range(3):
            loss = flow_matching_loss(transformer, cache, torch.arange(4), seed=step, cfg=cfg)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        curves.append(losses)
    eager, compiled = curves
    assert compiled == pytest.approx(eager, abs=1e-4)
    assert eager[0] != eager[-1]  # the LoRA moved: the steps after the first count too


def test_compiled_classifier_blocks_give_eagers_logits(tmp_path, ucmerced) -> None:
    cfg = smoke_config(tmp_path, **{"classifier.mode": "full"})
    classes = ["a", "b", "c"]
    eager = Backbone(cfg, classes)
    compiled = Backbone(smoke_config(tmp_path, **{"classifier.compile": "regional"}), classes)
    compiled.model.load_state_dict(eager.model.state_dict())  # the same new head
    assert len(repeated_blocks(compiled.model)) == compiled.model.config.num_hidden_layers
    pixels = torch.randn(4, 3, eager.size, eager.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = eager.model(pixel_values=pixels).logits
        got = compiled.model(pixel_values=pixels).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_compiled_generation_gives_eagers_images(tmp_path, ucmerced) -> None:
    import numpy as np

    from synthaug.generate import denoise, list_jobs, load_generator

    images = []
    for mode in ("none", "regional"):
        cfg = smoke_config(tmp_path / mode, **{"generation.compile": mode})
        pipe, _, _ = load_generator(cfg, arm="base")
        jobs = list_jobs(cfg, prepare_data(cfg).classes)[:3]
        images.append(np.stack([np.asarray(image) for image in denoise(pipe, cfg, jobs)]))
    eager, compiled = (array.astype(int) for array in images)
    assert eager.std() > 0  # real pictures, not a constant
    assert np.abs(eager - compiled).max() <= 2  # grey levels
