"""Which of torch's attention kernels the study lets FLUX and the classifier use."""

from __future__ import annotations

import torch


def avoid_cudnn_attention() -> None:
    """Keep torch's scaled-dot-product attention off its cuDNN kernels for this process
    (flash and memory-efficient attention remain). Measured on an H200, torch 2.11+cu130:
    at FLUX.1-dev's shapes (bf16, 24 heads of 128, 256 image + 512 text tokens) the cuDNN
    backward failed in the LoRA's first step ("mha_graph.execute(...).is_good()" or an
    illegal memory access; `python bench/gpu_flux.py --attention default` shows it); the
    tiny bf16 LoRA's sample images came out NaN with it and finite without; ViT-base
    fine-tunes with either. Every FLUX load and every Accelerator calls it."""
    torch.backends.cuda.enable_cudnn_sdp(False)
