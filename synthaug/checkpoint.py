"""Training checkpoints without pickle: one safetensors file, the tensors as tensors and
everything else (step, losses, scheduler, optimizer scalars) as JSON in its header.

Loading a pickle runs whatever code the file names, and run folders often sit on a shared
cluster file system; a safetensors file holds data only. The JSON keeps what a state dict
needs to come back exactly: ints, floats (`repr` round-trips), None, inf, tuples and
non-string dictionary keys (the optimizer's parameter indices) are tagged. One file,
written atomically, so a kill leaves either the previous checkpoint or the new one.
An older `checkpoint.pt` is read once with `torch.load(weights_only=True)` (tensors and
plain containers only) and rewritten in this format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from synthaug.io import atomic_write_bytes

STATE_KEY = "synthaug_state"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read safely; the message names the file and the fix."""


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` as JSON, its tensors moved into `tensors` under numbered names."""
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().cpu().contiguous()
        return {"tensor": name}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, dict):
        return {"items": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"a checkpoint cannot hold a {type(value).__name__}")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if "tensor" in value:
            return tensors[value["tensor"]]
        if "tuple" in value:
            return tuple(_decode(v, tensors) for v in value["tuple"])
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["items"]}
    return value


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` (nested dicts, lists, tuples, tensors, numbers) to `path` atomically."""
    tensors: dict[str, torch.Tensor] = {}
    tree = json.dumps(_encode(state, tensors))
    atomic_write_bytes(path, save(tensors, metadata={STATE_KEY: tree}))


def load_checkpoint(path: Path) -> dict:
    """The state `save_checkpoint` wrote, tensors on the CPU."""
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata() or {}
        if STATE_KEY not in metadata:
            raise CheckpointError(f"{path} is not a synthaug checkpoint; delete it to start over")
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    return _decode(json.loads(metadata[STATE_KEY]), tensors)


def convert_legacy(pickled: Path, path: Path) -> None:
    """Rewrite an older pickled `checkpoint.pt` as `path`, reading it with
    `weights_only=True` (no code runs), then remove it; refuse one that needs more."""
    try:
        state = torch.load(pickled, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{pickled} cannot be read safely (torch.load with weights_only=True: "
            f"{type(error).__name__}); delete it to train from the start"
        ) from None
    save_checkpoint(path, state)
    pickled.unlink()
