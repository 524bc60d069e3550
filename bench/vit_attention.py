"""ViT-base fine-tuning on a CUDA GPU with torch's cuDNN attention on, then off.

    python bench/vit_attention.py

ViT-base-patch16-224 shapes (random weights, 38 classes), batch 32, bf16 autocast,
AdamW: 2 warm-up and 10 timed steps per setting; prints images/s and whether every loss
was finite. synthaug keeps cuDNN's attention off (`synthaug.attention.avoid_cudnn_attention`);
this shows what that costs or saves for the classifier on your GPU.
"""

from __future__ import annotations

import time

import torch
from transformers import ViTConfig, ViTForImageClassification


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("bench/vit_attention.py needs a CUDA GPU")
    device = "cuda"
    model = ViTForImageClassification(ViTConfig(num_labels=38)).to(device)
    print("attention implementation:", model.config._attn_implementation)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    pixels = torch.randn(32, 3, 224, 224, device=device)
    labels = torch.randint(38, (32,), device=device)
    for cudnn in (True, False):
        torch.backends.cuda.enable_cudnn_sdp(cudnn)
        losses = []
        for step in range(12):
            if step == 2:
                torch.cuda.synchronize()
                start = time.perf_counter()
            with torch.autocast(device, dtype=torch.bfloat16):
                loss = model(pixel_values=pixels, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        torch.cuda.synchronize()
        rate = 32 * 10 / (time.perf_counter() - start)
        finite = all(value == value for value in losses)
        state = "on" if cudnn else "off"
        print(f"cuDNN attention {state}: {rate:.0f} images/s, losses finite {finite}")


if __name__ == "__main__":
    main()
