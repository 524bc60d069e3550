"""Stage 3: the classifier on one generated:real mix (a *cell*), tested on the real test split.

A cell is (n_generated, n_real, seed). Its training images are drawn class-balanced and
seeded from the real pool and the generated set; its test images are always the
manifest's real test split. Two modes share everything but the training loop:

- `full`: fine-tune the whole `AutoModelForImageClassification` (the paper's ViT-base);
- `linear_probe`: freeze the backbone, cache the classifier head's input features once
  per image, and train only a linear head (the CPU profile).

Each cell writes `<run>/cells/<cell>/probabilities.safetensors` (its test probabilities,
fp16) and `<run>/cells/<cell>/metrics.json`; a cell whose metrics exist and match its
config is skipped, and a metric added to `metrics.METRICS` later is computed for it from
its probabilities.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save
from torch import nn

from synthaug.config import StudyConfig, config_hash
from synthaug.data import (
    DataError,
    ImageLoader,
    ImageRecord,
    prepare_data,
    read_generated_manifest,
    spread,
)
from synthaug.design import Cell, default_real_count
from synthaug.io import atomic_write_bytes, read_json, same_settings, sha256_file, write_json
from synthaug.machinery import provenance, quiet
from synthaug.machinery.compiling import compile_blocks
from synthaug.machinery.progress import Progress
from synthaug.metrics import METRICS, classification_report
from synthaug.models import backbone_kind, classifier_source, default_device, make_accelerator
from synthaug.timm_backbone import load_timm

log = logging.getLogger(__name__)


def sample_balanced(
    records: list[ImageRecord], n: int, classes: list[str], seed: int, tag: str
) -> list[ImageRecord]:
    """`n` records spread evenly over `classes`, drawn with a seed; the same (seed, n) always
    draws the same images, so a mix and its same-count real baseline share real images."""
    if n == 0:
        return []
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_class[record.label].append(record)
    chosen: list[ImageRecord] = []
    for label, count in spread(n, classes).items():
        items = sorted(by_class[label], key=lambda r: r.ref)
        if len(items) < count:
            raise DataError(
                f"{tag}: class {label!r} has {len(items)} images, the cell needs "
                f"{count}; lower the mix size or provide more {tag} images"
            )
        chosen += random.Random(f"{seed}/{tag}/{label}").sample(items, count)
    return chosen


def to_pixels(
    images: Iterable[Image.Image], size: int, mean: list[float], std: list[float]
) -> torch.Tensor:
    """The one preprocessing for real and generated images: bicubic resize, scale, normalise."""
    pixels = resized(images, size).float() / 255.0
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def resized(images: Iterable[Image.Image], size: int) -> torch.Tensor:
    """RGB images resized (bicubic) to size x size, as one uint8 (N, 3, size, size) tensor."""
    arrays = [
        np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
        for image in images
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def _transformers_classifier(source: str, classes: list[str]) -> tuple:
    """A transformers image classifier with a new head of `classes`, and its image
    processor's mean and std."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    processor = AutoImageProcessor.from_pretrained(source)
    model = AutoModelForImageClassification.from_pretrained(
        source,
        num_labels=len(classes),
        id2label=dict(enumerate(classes)),
        label2id={name: i for i, name in enumerate(classes)},
    )
    return model, list(processor.image_mean), list(processor.image_std)


class Backbone:
    """The classifier model and its normalisation, loaded the way hub checkpoints are: a
    transformers image classifier (`AutoModelForImageClassification`, its image processor's
    mean and std) or a timm model (`create_model`, its data config). Either is called as
    `model(pixel_values=...).logits` and has its head as `model.classifier`, whose input is
    the feature space of the linear probe and the quality metrics."""

    def __init__(self, cfg: StudyConfig, classes: list[str], head_seed: int | None = None) -> None:
        source = classifier_source(cfg.classifier)  # building a tiny stand-in draws numbers
        if head_seed is not None:  # so the new head's weights are the seed's own, not what
            torch.manual_seed(head_seed)  # the process (a warm kernel's cells) drew before
        quiet.no_loading_bars()
        self.size = cfg.classifier.image_size
        self.source = source
        if backbone_kind(cfg.classifier.model) == "timm":
            model, data = load_timm(source, len(classes), self.size)
            self.mean, self.std = list(data["mean"]), list(data["std"])
        else:
            model, self.mean, self.std = _transformers_classifier(source, classes)
        self.model = model.to(default_device())
        compile_blocks(self.model, cfg.classifier.compile)

    def pixels(self, images: Iterable[Image.Image]) -> torch.Tensor:
        return to_pixels(images, self.size, self.mean, self.std)

    @torch.no_grad()
    def features(self, images: list[Image.Image], batch_size: int) -> torch.Tensor:
        """The classifier head's input (CLS for ViT; CLS + mean patch for DINOv2), computed
        on the model's device and returned on the CPU as float32."""
        captured: list[torch.Tensor] = []
        hook = self.model.classifier.register_forward_pre_hook(
            lambda _module, args: captured.append(args[0].detach().float().cpu())
        )
        self.model.eval()
        try:
            for start in range(0, len(images), batch_size):
                pixels = self.pixels(images[start : start + batch_size])
                self.model(pixel_values=pixels.to(self.model.device, self.model.dtype))
        finally:
            hook.remove()
        return torch.cat(captured)


class FeatureCache:
    """Frozen-backbone features per image (keyed by sha256), one atomically written file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, torch.Tensor] = {}
        if path.exists():
            with safe_open(str(path), "pt") as handle:
                keys = json.loads(handle.metadata()["sha256"])
                self.rows = dict(zip(keys, handle.get_tensor("features"), strict=True))

    def ensure(
        self, records: list[ImageRecord], compute: Callable[[list[ImageRecord]], torch.Tensor]
    ) -> float:
        """Compute (with `compute`) the features of the records not cached yet; return the
        seconds it took. Nothing is computed, or loaded, when every record is cached."""
        todo = list({r.sha256: r for r in records if r.sha256 not in self.rows}.values())
        if not todo:
            return 0.0
        start = time.perf_counter()
        with Progress(len(todo), "backbone features", "images") as progress:
            for chunk in range(0, len(todo), 256):
                batch = todo[chunk : chunk + 256]
                features = compute(batch)
                self.rows.update(zip((r.sha256 for r in batch), features, strict=True))
                progress.update(len(batch))
        keys = sorted(self.rows)
        blob = save(
            {"features": torch.stack([self.rows[k] for k in keys]).contiguous()},
            metadata={"sha256": json.dumps(keys)},
        )
        atomic_write_bytes(self.path, blob)
        return time.perf_counter() - start

    def matrix(self, records: list[ImageRecord]) -> torch.Tensor:
        return torch.stack([self.rows[r.sha256] for r in records])


def _epoch_stats(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = nn.functional.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(1) == labels).float().mean().item()


def train_linear_head(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    n_classes: int,
    cfg: StudyConfig,
    seed: int,
) -> tuple[nn.Linear, list[dict]]:
    """A linear head on frozen features (AdamW, mini-batches); per-epoch train/test curves."""
    torch.manual_seed(seed)
    head = nn.Linear(train_x.shape[1], n_classes)
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=cfg.classifier.learning_rate, weight_decay=cfg.classifier.weight_decay
    )
    order = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, cfg.classifier.epochs + 1):
        head.train()
        for batch in torch.randperm(len(train_x), generator=order).split(cfg.classifier.batch_size):
            loss = nn.functional.cross_entropy(head(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            train_loss, train_acc = _epoch_stats(head(train_x), train_y)
            test_loss, test_acc = _epoch_stats(head(test_x), test_y)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_accuracy": train_acc,
                "test_loss": test_loss,
                "test_accuracy": test_acc,
            }
        )
    return head, history


class ImageDataset(torch.utils.data.Dataset):
    def __init__(
        self,
        records: list[ImageRecord],
        labels: list[int],
        load: Callable,
        backbone: Backbone,
        flip: bool,
    ) -> None:
        self.records, self.labels, self.load = records, labels, load
        self.backbone, self.flip = backbone, flip

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.load(self.records[index])
        if self.flip and random.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return self.backbone.pixels([image])[0], self.labels[index]


def classifier_step(
    model, pixels: torch.Tensor, labels: torch.Tensor, backward: Callable[[torch.Tensor], None]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of one fine-tuning batch on the model's device; returns the
    loss and the number of correct predictions (device tensors, not yet synchronised)."""
    device = next(model.parameters()).device
    pixels, labels = pixels.to(device), labels.to(device)
    logits = model(pixel_values=pixels).logits
    loss = nn.functional.cross_entropy(logits.float(), labels)
    backward(loss)
    return loss.detach(), (logits.argmax(1) == labels).sum()


class DeviceImages:
    """A cell's images decoded and resized once (bicubic, as `to_pixels`), held as uint8
    on the device: 10,000 ViT inputs are 1.5 GB. Batches are flipped and normalised
    there, giving the DataLoader path's pixels bit for bit (a flip commutes with the
    resize)."""

    def __init__(self, records: list[ImageRecord], load: Callable, backbone: Backbone) -> None:
        device = next(backbone.model.parameters()).device
        self.pixels = resized((load(r) for r in records), backbone.size).to(device)
        self.mean = torch.tensor(backbone.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(backbone.std, device=device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.pixels)

    def batch(self, rows: torch.Tensor, flips: torch.Tensor | None = None) -> torch.Tensor:
        """Rows `rows` as normalised float pixels, mirrored where `flips` is true."""
        device = self.pixels.device
        pixels = self.pixels[rows.to(device)]
        if flips is not None:
            flips = flips.to(device).view(-1, 1, 1, 1)
            pixels = torch.where(flips, pixels.flip(-1), pixels)
        return (pixels.float() / 255.0 - self.mean) / self.std


class _Draws(torch.utils.data.Dataset):
    """What `ImageDataset` draws at each visit, without its image: the row and the flip
    coin. Iterated by the same (accelerate-prepared) DataLoader, it gives the DataLoader
    path's order and flips exactly."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[int, bool]:
        return index, random.random() < 0.5


def fine_tune(
    backbone: Backbone,
    train: tuple[list[ImageRecord], list[int]],
    test: tuple[list[ImageRecord], list[int]],
    load: Callable,
    cfg: StudyConfig,
    seed: int,
) -> tuple[np.ndarray, list[dict]]:
    """Full fine-tune with `accelerate` (devices, mixed precision); returns test
    probabilities and per-epoch train/test curves. With `classifier.preload` the images
    are decoded once onto the device and the loss and hits summed there, read back once
    an epoch; else a DataLoader decodes them every epoch (both give the same numbers)."""
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    c = cfg.classifier
    set_seed(seed)
    accelerator = make_accelerator(c.mixed_precision)
    if c.preload:
        batches = _PreloadedBatches(train, test, load, backbone, c.batch_size, seed)
    else:
        batches = _LoaderBatches(train, test, load, backbone, c, seed)
    optimizer = torch.optim.AdamW(
        backbone.model.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay
    )
    scheduler = get_scheduler(
        "linear", optimizer, num_warmup_steps=0, num_training_steps=c.epochs * batches.steps
    )
    model, optimizer, scheduler = accelerator.prepare(backbone.model, optimizer, scheduler)
    batches.prepare(accelerator)
    history, probs = [], np.empty(0)
    progress = Progress(c.epochs * batches.steps, "fine-tune", "steps")
    for epoch in range(1, c.epochs + 1):
        model.train()
        device = next(model.parameters()).device
        total_loss = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for pixels, labels in batches.train():
            loss, hits = classifier_step(model, pixels, labels, accelerator.backward)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            total_loss += loss.double() * len(labels)
            correct += hits
            progress.update(1, epoch=epoch)
        model.eval()
        test_logits, test_labels = batches.test_logits(model, accelerator)
        test_loss, test_acc = _epoch_stats(test_logits, test_labels)
        seen = len(train[0])
        loss_sum, hit_count = torch.stack([total_loss, correct.double()]).tolist()  # one sync
        history.append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / seen,
                "train_accuracy": hit_count / seen,
                "test_loss": test_loss,
                "test_accuracy": test_acc,
            }
        )
        probs = test_logits.softmax(1).numpy()
    progress.close()
    return probs, history


class _PreloadedBatches:
    """`fine_tune`'s batches from `DeviceImages`: each image decoded once per cell."""

    def __init__(self, train, test, load, backbone: Backbone, batch_size: int, seed: int):
        self.images, self.labels = DeviceImages(train[0], load, backbone), torch.tensor(train[1])
        self.test_images, self.test_labels = DeviceImages(test[0], load, backbone), test[1]
        self.batch_size = batch_size
        self.draws = torch.utils.data.DataLoader(
            _Draws(len(self.images)),
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        self.steps = len(self.draws)

    def prepare(self, accelerator) -> None:
        self.draws = accelerator.prepare(self.draws)
        self.labels = self.labels.to(accelerator.device)

    def train(self):
        for rows, flips in self.draws:
            yield self.images.batch(rows, flips), self.labels[rows.to(self.labels.device)]

    @torch.no_grad()
    def test_logits(self, model, _accelerator) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(len(self.test_images)).split(self.batch_size)
        logits = [model(pixel_values=self.test_images.batch(r)).logits.float() for r in rows]
        return torch.cat(logits).cpu(), torch.tensor(self.test_labels)


class _LoaderBatches:
    """`fine_tune`'s batches from DataLoaders that decode every image every epoch."""

    def __init__(self, train, test, load, backbone: Backbone, c, seed: int):
        self.loader = torch.utils.data.DataLoader(
            ImageDataset(*train, load, backbone, flip=True),
            batch_size=c.batch_size,
            shuffle=True,
            num_workers=c.num_workers,
            generator=torch.Generator().manual_seed(seed),
        )
        self.test_loader = torch.utils.data.DataLoader(
            ImageDataset(*test, load, backbone, flip=False),
            batch_size=c.batch_size,
            num_workers=c.num_workers,
        )
        self.steps = len(self.loader)

    def prepare(self, accelerator) -> None:
        self.loader, self.test_loader = accelerator.prepare(self.loader, self.test_loader)

    def train(self):
        yield from self.loader

    @torch.no_grad()
    def test_logits(self, model, accelerator) -> tuple[torch.Tensor, torch.Tensor]:
        logits_all, labels_all = [], []
        for pixels, labels in self.test_loader:
            logits = model(pixel_values=pixels).logits.float()
            logits_all.append(accelerator.gather_for_metrics(logits).cpu())
            labels_all.append(accelerator.gather_for_metrics(labels).cpu())
        return torch.cat(logits_all), torch.cat(labels_all)


def feature_cache_path(cfg: StudyConfig) -> Path:
    """The linear probe's feature cache of this run and backbone."""
    c = cfg.classifier
    return cfg.paths.features(config_hash(c.tiny, c.model, c.image_size))


class CellRunner:
    """Runs cells of one study, sharing the loaded backbone and the feature cache."""

    def __init__(self, cfg: StudyConfig) -> None:
        self.cfg = cfg
        self.manifest = prepare_data(cfg)
        self.classes = self.manifest.classes
        self._backbone: Backbone | None = None
        self._generated: dict[tuple[str, int], list[ImageRecord]] = {}
        self.load = ImageLoader(cfg.dataset, cfg.paths.root)

    @functools.cached_property
    def feature_cache(self) -> FeatureCache:
        """The run's feature cache, loaded once (analysis reads and extends it)."""
        return FeatureCache(feature_cache_path(self.cfg))

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = Backbone(self.cfg, self.classes)
        return self._backbone

    def generated(self, arm: str = "lora", generator_seed: int = 0) -> list[ImageRecord]:
        """One arm's synthetic set of one generator seed (its manifest read once)."""
        key = (arm, generator_seed)
        if key not in self._generated:
            self._generated[key] = read_generated_manifest(self._arm_manifest(*key))
        return self._generated[key]

    def _arm_manifest(self, arm: str, generator_seed: int) -> Path:
        return self.cfg.at_generator_seed(generator_seed).paths.arm_manifest(arm)

    def cell_hash(self, cell: Cell) -> str:
        key = asdict(cell)
        if not cell.generator_seed:  # generator seed 0: the key cells had before seeds
            del key["generator_seed"]
        inputs = [key, sha256_file(self.cfg.paths.manifest)]
        if cell.n_generated:
            self.generated(cell.arm, cell.generator_seed)  # a clear error if not generated
            inputs.append(sha256_file(self._arm_manifest(cell.arm, cell.generator_seed)))
        return config_hash(self.cfg.classifier, *inputs)

    def warm_features(self, cells: list[Cell]) -> float:
        """Cache the frozen-backbone features of the images these cells draw, and of the
        test split, once, so that cells run in parallel only read the cache. A pool far
        larger than the draws costs only what is drawn (the analysis adds what it uses)."""
        records = self.manifest.split("test") + [r for c in cells for r in self.training_set(c)]
        return FeatureCache(feature_cache_path(self.cfg)).ensure(records, self.features)

    def training_set(self, cell: Cell) -> list[ImageRecord]:
        """The cell's training images: its real part from the pool, its generated part from
        its arm's set, each drawn class-balanced with the cell's seed."""
        real = sample_balanced(
            self.manifest.split("pool"), cell.n_real, self.classes, cell.seed, "real"
        )
        if not cell.n_generated:
            return real
        generated = self.generated(cell.arm, cell.generator_seed)
        return real + sample_balanced(
            generated, cell.n_generated, self.classes, cell.seed, "generated"
        )

    def features(self, records: list[ImageRecord]) -> torch.Tensor:
        """The backbone's features of these images (the backbone is loaded on first use)."""
        images = [self.load(r) for r in records]
        return self.backbone.features(images, self.cfg.classifier.batch_size)

    def is_done(self, cell: Cell) -> bool:
        """Its metrics.json exists and was made with the current settings and images."""
        out = self.cfg.paths.cell_metrics(cell.name)
        try:
            return out.exists() and read_json(out).get("config_hash") == self.cell_hash(cell)
        except DataError:
            return False

    def metrics(self, cell: Cell) -> dict:
        """The saved metrics of a cell that is done, with every metric of the registry
        (`metrics.METRICS`) it did not save computed from its saved probabilities."""
        saved = read_json(self.cfg.paths.cell_metrics(cell.name))
        path = self.cfg.paths.cell_probabilities(cell.name)
        missing = [name for name in METRICS if name not in saved]
        if missing and path.exists():
            probs, labels = read_probabilities(path)
            saved |= classification_report(probs, labels, saved["classes"], missing)
        return saved

    def run(self, cell: Cell) -> dict:
        """Train and test one cell, or return its saved metrics if they match its config."""
        out = self.cfg.paths.cell_metrics(cell.name)
        key = self.cell_hash(cell)
        if same_settings(out, {"config_hash": key}, str(out.parent)):
            log.info("%s: done already, skipped", cell.name)
            return read_json(out)
        provenance.record(self.cfg, f"03_train_ratio-{cell.name}")
        start = time.perf_counter()
        train = self.training_set(cell)
        test = self.manifest.split("test")
        label = {name: i for i, name in enumerate(self.classes)}
        train_y = [label[r.label] for r in train]
        test_y = [label[r.label] for r in test]
        timings: dict[str, float] = {}
        if self.cfg.classifier.mode == "linear_probe":
            cache = FeatureCache(feature_cache_path(self.cfg))
            timings["features_s"] = cache.ensure(train + test, self.features)
            fit_start = time.perf_counter()
            head, history = train_linear_head(
                cache.matrix(train),
                torch.tensor(train_y),
                cache.matrix(test),
                torch.tensor(test_y),
                len(self.classes),
                self.cfg,
                cell.seed,
            )
            with torch.no_grad():
                probs = head(cache.matrix(test)).softmax(1).numpy()
            timings["train_s"] = time.perf_counter() - fit_start
        else:  # every cell fine-tunes a fresh copy of the pretrained weights
            fit_start = time.perf_counter()
            probs, history = fine_tune(
                Backbone(self.cfg, self.classes, head_seed=cell.seed),
                (train, train_y),
                (test, test_y),
                self.load,
                self.cfg,
                cell.seed,
            )
            timings["train_s"] = time.perf_counter() - fit_start
        timings["total_s"] = time.perf_counter() - start
        save_probabilities(self.cfg.paths.cell_probabilities(cell.name), probs, test, test_y)
        metrics = {
            "cell": {**asdict(cell), "name": cell.name, "kind": cell.kind},
            "config_hash": key,
            "classifier": self.cfg.classifier.model_dump(mode="json"),
            "backbone": self.cfg.classifier.model,
            "classes": self.classes,
            **classification_report(probs, np.asarray(test_y), self.classes),
            "history": history,
            "train_images": [[r.split, r.ref, r.sha256] for r in train],
            "test_images": [[r.split, r.ref, r.sha256] for r in test],
            "timings": timings,
        }
        write_json(out, metrics, indent=1, sort_keys=False)
        return metrics


def save_probabilities(path: Path, probs: np.ndarray, test: list, labels: list[int]) -> None:
    """A cell's test probabilities as fp16, with each row's test image and label."""
    refs = json.dumps([r.ref for r in test])
    tensors = {
        "probabilities": torch.from_numpy(probs).half().contiguous(),
        "labels": torch.tensor(labels),
    }
    atomic_write_bytes(path, save(tensors, metadata={"test_refs": refs}))


def read_probabilities(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The saved probabilities (as float32) and true labels of a cell's test images."""
    with safe_open(str(path), "pt") as handle:
        probs = handle.get_tensor("probabilities").float().numpy()
        return probs, handle.get_tensor("labels").numpy()


def run_cell(
    cfg: StudyConfig, n_generated: int, n_real: int | None, seed: int, arm: str = "lora"
) -> dict:
    """Notebook 03's one call: train and test the classifier on one mix of one arm, with
    the synthetic set of `cfg`'s generator seed."""
    if n_real is None:
        n_real = default_real_count(cfg.study, n_generated)
    cfg.generation.check_arm(arm)
    cell = Cell(n_generated, n_real, seed, arm, cfg.generator_seed)
    return CellRunner(cfg.at_generator_seed(0)).run(cell)
