"""Regional compilation: `torch.compile` on each block a model repeats, not on the whole.

FLUX's double- and single-stream blocks and a ViT's encoder layers are one class each,
repeated 19 + 38 or 12 times: compiled per block, inductor traces each class once and
reuses the kernels (the whole graph's speed-up at a fraction of its compile time, and a
graph break stays inside one block). `regional-cudagraphs` adds CUDA graphs
(`mode="reduce-overhead"`), which replay a block's kernel launches at once: what a
launch-bound batch-1 step needs, where the block's shapes stay fixed. On a CPU torch
runs the cudagraph mode as plain compilation.
"""

from __future__ import annotations

from typing import Literal

import torch

CompileMode = Literal["none", "regional", "regional-cudagraphs"]


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The blocks `model` repeats: the classes a diffusers model names in
    `_repeated_blocks`, else the members of each ModuleList or Sequential (timm's ViT
    blocks) whose members share a class."""
    names = getattr(model, "_repeated_blocks", None)
    if names:
        return [m for m in model.modules() if type(m).__name__ in names]
    blocks = []
    for module in model.modules():
        stacked = isinstance(module, torch.nn.ModuleList | torch.nn.Sequential)
        members = list(module) if stacked else []
        if len(members) > 1 and len({type(member) for member in members}) == 1:
            blocks += members
    return blocks


def compile_blocks(model: torch.nn.Module, mode: CompileMode) -> int:
    """Compile `model`'s repeated blocks in place (after any LoRA is added: the adapter
    layers sit inside the blocks); returns how many. Inductor compiles at the first call
    (and again at a new shape), which is where its time goes."""
    if mode == "none":
        return 0
    options = {"mode": "reduce-overhead"} if mode == "regional-cudagraphs" else {}
    blocks = repeated_blocks(model)
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no repeated blocks to compile")
    for block in blocks:
        block.compile(**options)
    return len(blocks)
