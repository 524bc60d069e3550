"""The synthetic set's quality in the classifier backbone's features: CAS, the Fréchet
distance and precision/recall/density/coverage per class; the ceilings CAS is measured
against (linear probes on the LoRA-training images, at the generator's resolution and
through its VAE); and the memorisation check (nearest LoRA-training image)."""

from __future__ import annotations

import functools
import random
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pandas as pd
import torch
from PIL import Image

from synthaug.classify import CellRunner
from synthaug.classify.linear_probe import train_linear_head
from synthaug.config import StudyConfig
from synthaug.data import ImageRecord
from synthaug.design import by_pair
from synthaug.families import family_named
from synthaug.metrics import frechet_distance, prdc
from synthaug.models import base_name, default_device
from synthaug.pretrain import base_model_source

PRDC_K = 5  # neighbours of precision/recall/density/coverage (Naeem et al.'s default)


def quality(runner: CellRunner, cells: list[dict], arm: str = "lora") -> pd.DataFrame:
    """Per class, and over all classes, one arm's synthetic set against the real pool in
    the classifier's frozen-backbone features: CAS (test accuracy of the generated-only
    classifier, mean over seeds), the Fréchet distance, and precision, recall, density and
    coverage (`metrics.prdc`, k=5), on equal counts per class (a seeded sample of the pool
    the size of the class's generated images). Features come from the shared feature
    cache; those missing (every one, in `classifier.mode: full`) are computed first. The
    synthetic set is the first generator seed's (`StudyConfig.first_generator`)."""

    cfg = runner.cfg
    generated_only = by_pair(cells, arm).get((cfg.study.generated_only_count, 0), [])
    table = pd.DataFrame(index=[*runner.classes, "all classes"])
    table.index.name = "class"
    if generated_only:
        per_class = pd.DataFrame([m["per_class_accuracy"] for m in generated_only]).mean()
        table["cas"] = per_class
        table.loc["all classes", "cas"] = np.mean([m["accuracy"] for m in generated_only])
    shown = cfg.first_generator()
    if not shown.paths.arm_manifest(arm).exists():
        return table
    generated = runner.generated(arm, shown.generator_seed)
    pairs = frechet_samples(runner.manifest.split("pool"), generated)
    cache = runner.feature_cache
    cache.ensure([r for real, fake in pairs.values() for r in real + fake], runner.features)
    pairs["all classes"] = tuple(
        [r for side in sides for r in side] for sides in zip(*pairs.values(), strict=True)
    )
    for label, (real, fake) in pairs.items():
        real_x, fake_x = cache.matrix(real).numpy(), cache.matrix(fake).numpy()
        table.loc[label, "n_per_side"] = len(real)
        if min(len(real), len(fake)) > 1:
            table.loc[label, "frechet_distance"] = frechet_distance(real_x, fake_x)
        if min(len(real), len(fake)) > PRDC_K:
            for name, value in prdc(real_x, fake_x, PRDC_K).items():
                table.loc[label, name] = value
    return table


def frechet_samples(
    pool: list[ImageRecord], generated: list[ImageRecord]
) -> dict[str, tuple[list[ImageRecord], list[ImageRecord]]]:
    """Per class, (real, generated) of equal size: every generated image of the class and a
    seeded sample of as many pool images (or all of them, and as many generated, if the
    pool is smaller). Fréchet distances are biased by the sample size; equal counts keep
    the classes comparable."""
    real_by, fake_by = defaultdict(list), defaultdict(list)
    for record in pool:
        real_by[record.label].append(record)
    for record in generated:
        fake_by[record.label].append(record)
    pairs = {}
    for label in sorted(fake_by):
        real = sorted(real_by[label], key=lambda r: r.ref)
        fake = sorted(fake_by[label], key=lambda r: r.ref)
        n = min(len(real), len(fake))
        pairs[label] = (random.Random(f"frechet/{label}").sample(real, n), fake[:n])
    return pairs


def _probe_per_class(runner: CellRunner, train: list[ImageRecord]) -> list[float]:
    """Per-class test accuracy of a linear probe (seed 0) trained on `train`'s features."""

    cache, test = runner.feature_cache, runner.manifest.split("test")
    cache.ensure(test, runner.features)
    label = {name: i for i, name in enumerate(runner.classes)}
    head, _ = train_linear_head(
        cache.matrix(train),
        torch.tensor([label[r.label] for r in train]),
        cache.matrix(test),
        torch.tensor([label[r.label] for r in test]),
        len(runner.classes),
        runner.cfg,
        seed=0,
    )
    with torch.no_grad():
        predicted = head(cache.matrix(test)).argmax(1).numpy()
    truth = np.array([label[r.label] for r in test])
    return [float((predicted[truth == i] == i).mean()) for i in range(len(runner.classes))]


def _transformed_features(
    runner: CellRunner, records: list[ImageRecord], tag: str, transform
) -> list[ImageRecord]:
    """Cache the backbone's features of `records` after `transform` (a list of images to a
    list of images), keyed `<sha256>@<tag>`; return the records under those keys."""

    keyed = [replace(r, sha256=f"{r.sha256}@{tag}") for r in records]
    original = {k.sha256: r for k, r in zip(keyed, records, strict=True)}

    def compute(batch: list[ImageRecord]):
        images = transform([runner.load(original[r.sha256]) for r in batch])
        return runner.backbone.features(images, runner.cfg.classifier.batch_size)

    runner.feature_cache.ensure(keyed, compute)
    return keyed


def _resize(size: int):

    return lambda images: [i.resize((size, size), Image.Resampling.BICUBIC) for i in images]


def vae_roundtrip(cfg: StudyConfig):
    """Images to images through the base's own VAE at the generator's resolution (encode,
    take the posterior's mode, decode): the most any generator on that VAE can keep. The
    VAE is loaded on the first call only (not at all when the features are cached)."""

    @functools.cache
    def vae():
        model = family_named(cfg.generator.family).load_vae(base_model_source(cfg))
        return model.to(default_device()).eval()

    resize = _resize(cfg.generator.resolution)

    @torch.no_grad()
    def transform(images):
        arrays = np.stack([np.asarray(i.convert("RGB")) for i in resize(images)])
        x = torch.from_numpy(arrays).permute(0, 3, 1, 2).to(vae().device, vae().dtype)
        x = x / 127.5 - 1
        out = vae().decode(vae().encode(x).latent_dist.mode()).sample.float().clamp(-1, 1)
        pixels = ((out + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(a) for a in pixels]

    return transform


def ceilings(runner: CellRunner, cells: list[dict]) -> pd.DataFrame:
    """Per class, what CAS is measured against (all test accuracies, linear probe on the
    backbone's features): CAS itself; a generator that reproduced its LoRA-training images
    exactly, at its own resolution, and the same images through the base's VAE (a probe
    trained on those images, one seed); and real images of the same count as CAS."""

    cfg = runner.cfg
    table = pd.DataFrame(index=runner.classes)
    table.index.name = "class"
    count = cfg.study.generated_only_count
    columns = {"cas": (count, 0, "lora"), "real_same_count": (0, count, "lora")}
    columns |= {f"cas_{arm}": (count, 0, arm) for arm in cfg.generation.arms[1:]}  # after lora
    for column, (n_generated, n_real, arm) in columns.items():
        runs = by_pair(cells, arm).get((n_generated, n_real))
        if runs:
            table[column] = pd.DataFrame([m["per_class_accuracy"] for m in runs]).mean()
    size = cfg.generator.resolution
    lora = runner.manifest.split("lora")
    resized = _transformed_features(runner, lora, f"{size}px", _resize(size))
    table[f"lora_images_at_{size}px"] = _probe_per_class(runner, resized)
    tag = f"{size}px-vae-{base_name(base_model_source(cfg))}"
    decoded = _transformed_features(runner, lora, tag, vae_roundtrip(cfg))
    table[f"lora_images_through_vae_at_{size}px"] = _probe_per_class(runner, decoded)
    table.loc["all classes"] = table.mean()
    return table


def nearest_lora_images(runner: CellRunner) -> pd.DataFrame:
    """Each generated image's nearest LoRA-training image of its class in the backbone's
    features (cosine distance), and, for reference, each real test image's. A generator
    that memorised its training images puts its images much nearer to them than new real
    images of the class are."""
    cache = runner.feature_cache
    lora = runner.manifest.split("lora")
    generated = runner.generated("lora", runner.cfg.first_generator().generator_seed)
    queries = {"generated": generated, "real test": runner.manifest.split("test")}
    cache.ensure(lora + [r for rs in queries.values() for r in rs], runner.features)

    def unit(records: list[ImageRecord]) -> torch.Tensor:
        return torch.nn.functional.normalize(cache.matrix(records), dim=1)

    rows = []
    for label in runner.classes:
        anchors = [r for r in lora if r.label == label]
        anchor_x = unit(anchors)
        for kind, records in queries.items():
            mine = [r for r in records if r.label == label]
            if not mine:
                continue
            distance = 1 - unit(mine) @ anchor_x.T
            best, index = distance.min(dim=1)
            rows += [
                {
                    "label": label,
                    "kind": kind,
                    "ref": r.ref,
                    "split": r.split,
                    "sha256": r.sha256,
                    "nearest_lora_ref": anchors[i].ref,
                    "distance": float(d),
                }
                for r, d, i in zip(mine, best, index.tolist(), strict=True)
            ]
    return pd.DataFrame(rows)


def memorisation_summary(nearest: pd.DataFrame) -> pd.DataFrame:
    """Per class: median distance to the nearest LoRA-training image, generated vs real."""
    table = nearest.pivot_table(index="label", columns="kind", values="distance", aggfunc="median")
    table.loc["all classes"] = nearest.groupby("kind")["distance"].median()
    return table
