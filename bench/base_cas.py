"""Class information of a profile's pretrained tiny base, before any LoRA: its CAS on AID.

    python bench/base_cas.py [--profile params/ucmerced-cpu.yaml] [--per-class 10]
        [-p generator.tiny.attention_head_dim 64 ...] [--lever NAME]

Generates `--per-class` images for each pretraining class (its caption, the profile's
generation steps and true CFG), trains the profile's classifier (linear probe on the
frozen backbone) on them, and tests it on `--test-per-class` real images of each class
(seeded draw). Also reports how well the VAE keeps colour. Prints and writes
`bench/results/base_cas.json`; the base is pretrained first if it is not cached. With
`--lever NAME`, the `-p` overrides (the pretraining's settings, the tiny architecture)
make one point of `bench/results/base_levers.json`, added beside the points already there.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

from synthaug.classify.backbone import Backbone  # noqa: E402
from synthaug.classify.linear_probe import train_linear_head  # noqa: E402
from synthaug.classify.pixels import to_pixels  # noqa: E402
from synthaug.config import load_config, parse_value  # noqa: E402
from synthaug.data import decode_image, open_source  # noqa: E402
from synthaug.families import family_named  # noqa: E402
from synthaug.pretrain import base_model_source, captions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=str(ROOT / "params" / "ucmerced-cpu.yaml"))
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--test-per-class", type=int, default=10)
    parser.add_argument(
        "-p", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), dest="overrides"
    )
    parser.add_argument("--lever", help="name the point and add it to base_levers.json")
    args = parser.parse_args()
    overrides = {key: parse_value(value) for key, value in args.overrides}
    cfg = load_config(args.profile, {"generator.base_model": "tiny", **overrides})
    pre, gen, size = cfg.generator.pretrain, cfg.generation, cfg.generator.resolution
    if pre is None:
        raise SystemExit(f"{args.profile} has no generator.pretrain section")
    source = open_source(pre.data)
    base = Path(base_model_source(cfg))
    pipe = family_named(cfg.generator.family).load_pipeline(base, torch.float32)
    record = json.loads((base / "pretraining.json").read_text())

    start, images, labels = time.perf_counter(), [], []
    for index, caption in enumerate(captions(source.classes, pre.caption_template)):
        n = args.per_class
        images += pipe(
            [caption] * n,
            height=size,
            width=size,
            num_inference_steps=gen.steps,
            guidance_scale=gen.guidance_scale,
            true_cfg_scale=gen.true_cfg_scale,
            negative_prompt=[""] * n,
            max_sequence_length=cfg.generator.max_sequence_length,
            generator=[torch.Generator().manual_seed(1000 * index + i) for i in range(n)],
        ).images
        labels += [index] * n
    generate_s = time.perf_counter() - start

    draw = random.Random(0)
    real, real_labels = [], []
    by_class = defaultdict(list)
    for ref, label, data in source.scan():
        by_class[label].append((ref, data))
    for index, label in enumerate(source.classes):
        for ref, data in draw.sample(sorted(by_class[label]), args.test_per_class):
            real.append(decode_image(data, 256, ref))
            real_labels.append(index)
    backbone = Backbone(cfg, source.classes)
    batch = cfg.classifier.batch_size
    head, history = train_linear_head(
        backbone.features(images, batch),
        torch.tensor(labels),
        backbone.features(real, batch),
        torch.tensor(real_labels),
        len(source.classes),
        cfg,
        seed=0,
    )

    with torch.no_grad():  # the VAE's colour fidelity on the same real images
        x = to_pixels(real, size, [0.5] * 3, [0.5] * 3)
        back = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    result = {
        "profile": Path(args.profile).name,
        "overrides": overrides,
        "base": base.name,
        "pretraining": {
            key: record[key] for key in ("seconds", "vae_seconds", "transformer_seconds")
        },
        "steps": {"vae": pre.vae_steps, "transformer": pre.transformer_steps},
        "transformer_parameters": sum(p.numel() for p in pipe.transformer.parameters()),
        "classes": len(source.classes),
        "chance": 1 / len(source.classes),
        "aid_cas": history[-1]["test_accuracy"],
        "generated_per_class": args.per_class,
        "real_test_per_class": args.test_per_class,
        "generation_s": generate_s,
        "true_cfg_scale": gen.true_cfg_scale,
        "generation_steps": gen.steps,
        "vae_l1": float((back - x).abs().mean() / 2),
        "vae_mean_rgb_error": float((back.mean((2, 3)) - x.mean((2, 3))).abs().mean() / 2),
        "generated_grey_spread_over_classes": float(
            np.std(
                [
                    np.mean(
                        [
                            np.asarray(im).mean() / 255
                            for im, y in zip(images, labels, strict=True)
                            if y == i
                        ]
                    )
                    for i in range(len(source.classes))
                ]
            )
        ),
    }
    print(json.dumps(result, indent=2))
    if args.lever:
        levers = RESULTS / "base_levers.json"
        points = json.loads(levers.read_text())["points"] if levers.exists() else []
        points = [p for p in points if p["lever"] != args.lever]
        points.append({"lever": args.lever, **result})
        print(f"written to {save('base_levers', {'points': points})}")
    else:
        print(f"written to {save('base_cas', result)}")


if __name__ == "__main__":
    main()
