"""CPU costs of the study's stages at the ucmerced-cpu settings.

    python bench/cpu_stages.py [--run runs/ucmerced-cpu]

Measures, on the tiny FLUX-architecture pipeline of the profile (random weights: the
same shapes, so the same cost as the pretrained base): LoRA training samples/s with the
latent/text cache and without it (the VAE and both text encoders run every step),
generation images/s, DINOv2-small feature images/s and the linear head's training time.
With --run, also the wall time of every stage of a finished study, read from the
papermill durations of its executed notebooks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from synthaug.config import load_config  # noqa: E402
from synthaug.families import family_named  # noqa: E402
from synthaug.flow import flow_matching_loss  # noqa: E402
from synthaug.lora import encode_training_set  # noqa: E402

CLASSES = ["agricultural", "beach", "forest", "harbor"]


def timed(fn, repeats: int) -> float:
    """Seconds per call after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def lora_throughput(cfg, steps: int) -> dict:
    from peft import LoraConfig

    g = cfg.generator
    family = family_named(g.family)
    pipe = family.tiny_pipeline(g.tiny)
    generator = torch.Generator().manual_seed(0)
    images = [
        Image.fromarray(
            (torch.rand(g.resolution, g.resolution, 3, generator=generator) * 255).byte().numpy()
        )
        for _ in range(g.batch_size)
    ]
    labels = [CLASSES[i % len(CLASSES)] for i in range(g.batch_size)]
    transformer = pipe.transformer
    transformer.requires_grad_(False)
    transformer.add_adapter(
        LoraConfig(
            r=g.lora.rank,
            lora_alpha=g.lora.alpha,
            init_lora_weights="gaussian",
            target_modules=family.targets(g.lora.target_modules),
        )
    )
    optimizer = torch.optim.AdamW([p for p in transformer.parameters() if p.requires_grad])
    rows = torch.arange(g.batch_size)

    def step(cache) -> None:
        loss = flow_matching_loss(transformer, cache, rows, 0, cfg)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    start = time.perf_counter()
    cache = encode_training_set(cfg, pipe, labels, images)
    encode_s = time.perf_counter() - start
    cached = timed(lambda: step(cache), steps)
    uncached = timed(lambda: step(encode_training_set(cfg, pipe, labels, images)), steps)
    return {
        "batch_size": g.batch_size,
        "resolution": g.resolution,
        "samples_per_s_cached": g.batch_size / cached,
        "samples_per_s_uncached": g.batch_size / uncached,
        "cache_speedup": uncached / cached,
        "encode_s_per_image": encode_s / g.batch_size,
    }, pipe


def generation_throughput(cfg, pipe) -> dict:
    size, batch = cfg.generator.resolution, cfg.generation.batch_size
    pipe.set_progress_bar_config(disable=True)

    def run() -> None:
        pipe(
            [cfg.generation.prompt_template.format(class_name="beach")] * batch,
            height=size,
            width=size,
            num_inference_steps=cfg.generation.steps,
            max_sequence_length=cfg.generator.max_sequence_length,
            generator=torch.Generator().manual_seed(0),
        )

    seconds = timed(run, 1)
    return {"batch_size": batch, "steps": cfg.generation.steps, "images_per_s": batch / seconds}


def classifier_throughput(cfg) -> dict:
    from synthaug.classify.backbone import Backbone
    from synthaug.classify.linear_probe import train_linear_head

    backbone = Backbone(cfg, CLASSES)
    images = [Image.new("RGB", (256, 256), (90, 120, 80))] * 64
    seconds = timed(lambda: backbone.features(images, cfg.classifier.batch_size), 1)
    width = backbone.features(images[:2], 2).shape[1]
    n_train, n_test = 1050, 420
    x, y = torch.randn(n_train, width), torch.randint(21, (n_train,))
    start = time.perf_counter()
    train_linear_head(x, y, torch.randn(n_test, width), torch.randint(21, (n_test,)), 21, cfg, 0)
    return {
        "image_size": cfg.classifier.image_size,
        "feature_images_per_s": 64 / seconds,
        "feature_width": width,
        "head_train_s": time.perf_counter() - start,
        "head_epochs": cfg.classifier.epochs,
        "head_train_images": n_train,
    }


def stage_times(run: Path) -> dict:
    """Wall time per stage of a finished study (papermill's per-notebook durations)."""
    totals: dict[str, float] = {}
    for path in sorted((run / "notebooks").glob("*.ipynb")):
        duration = json.loads(path.read_text())["metadata"]["papermill"]["duration"]
        stage = path.stem.split("-")[0]
        totals[stage] = totals.get(stage, 0.0) + duration
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="params/ucmerced-cpu.yaml")
    parser.add_argument("--steps", type=int, default=10, help="timed LoRA steps per variant")
    parser.add_argument("--run", type=Path, help="a finished study folder, for stage times")
    parser.add_argument("--name", default="cpu_stages")
    args = parser.parse_args()
    cfg = load_config(args.profile)
    lora, pipe = lora_throughput(cfg, args.steps)
    result = {
        "profile": args.profile,
        "lora": lora,
        "generation": generation_throughput(cfg, pipe),
        "classifier": classifier_throughput(cfg),
    }
    if args.run:
        result["stage_seconds"] = stage_times(args.run)
    print(json.dumps(result, indent=2))
    print(f"written to {save(args.name, result)}")


if __name__ == "__main__":
    main()
