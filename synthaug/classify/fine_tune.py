"""The `full` trainer (the paper's): fine-tune the whole image classifier with `accelerate`
(devices, mixed precision), a fresh copy of the pretrained weights for every cell."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from synthaug.classify.backbone import Backbone
from synthaug.classify.batches import LoaderBatches, PreloadedBatches
from synthaug.classify.curves import epoch_stats
from synthaug.config import StudyConfig
from synthaug.models import make_accelerator
from synthaug.runtime.progress import Progress

if TYPE_CHECKING:
    from synthaug.classify.cells import CellRunner
    from synthaug.classify.sampling import Labelled
    from synthaug.design import Cell


def full_fine_tune(
    runner: CellRunner, cell: Cell, train: Labelled, test: Labelled, timings: dict[str, float]
) -> tuple[np.ndarray, list[dict]]:
    """Fine-tune a fresh copy of the pretrained classifier (its head drawn with the
    cell's seed); its test probabilities and curves. Records the seconds (`train_s`)."""
    fit_start = time.perf_counter()
    backbone = Backbone(runner.cfg, runner.classes, head_seed=cell.seed)
    probs, history = fine_tune(backbone, train, test, runner.load, runner.cfg, cell.seed)
    timings["train_s"] = time.perf_counter() - fit_start
    return probs, history


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


def fine_tune(
    backbone: Backbone,
    train: Labelled,
    test: Labelled,
    load: Callable,
    cfg: StudyConfig,
    seed: int,
) -> tuple[np.ndarray, list[dict]]:
    """Full fine-tune with `accelerate`; returns test probabilities and per-epoch
    train/test curves. With `classifier.preload` the images are decoded once onto the
    device and the loss and hits summed there, read back once an epoch; else a DataLoader
    decodes them every epoch (both give the same numbers)."""
    # deferred: accelerate and transformers' trainer utilities take seconds to import
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    # ---- set-up: seed, devices, batches, optimizer, linear schedule --------------------
    c = cfg.classifier
    set_seed(seed)
    accelerator = make_accelerator(c.mixed_precision)
    if c.preload:
        batches = PreloadedBatches(train, test, load, backbone, c.batch_size, seed)
    else:
        batches = LoaderBatches(train, test, load, backbone, c, seed)
    optimizer = torch.optim.AdamW(
        backbone.model.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay
    )
    scheduler = get_scheduler(
        "linear", optimizer, num_warmup_steps=0, num_training_steps=c.epochs * batches.steps
    )
    model, optimizer, scheduler = accelerator.prepare(backbone.model, optimizer, scheduler)
    batches.prepare(accelerator)
    # ---- epochs: train, then test on the real test split ------------------------------
    history, probs = [], np.empty(0)
    progress = Progress(c.epochs * batches.steps, "fine-tune", "steps")
    for epoch in range(1, c.epochs + 1):
        model.train()
        step = functools.partial(_step, optimizer, scheduler, accelerator)
        loss_sum, hit_count = _train_epoch(model, batches, step, progress, epoch)
        model.eval()
        test_logits, test_labels = batches.test_logits(model, accelerator)
        test_loss, test_acc = epoch_stats(test_logits, test_labels)
        seen = len(train[0])
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


def _step(optimizer, scheduler, accelerator, model, pixels, labels):
    """One optimisation step: forward, backward, step, schedule; the loss and the hits."""
    loss, hits = classifier_step(model, pixels, labels, accelerator.backward)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return loss, hits


def _train_epoch(
    model, batches: LoaderBatches | PreloadedBatches, step: Callable, progress: Progress, epoch: int
) -> tuple[float, float]:
    """One pass over the training batches; the summed loss and hits, synchronised once."""
    device = next(model.parameters()).device
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for pixels, labels in batches.train():
        loss, hits = step(model, pixels, labels)
        total_loss += loss.double() * len(labels)
        correct += hits
        progress.update(1, epoch=epoch)
    loss_sum, hit_count = torch.stack([total_loss, correct.double()]).tolist()  # one sync
    return loss_sum, hit_count
