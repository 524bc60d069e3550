"""The `linear_probe` trainer (the CPU profile's): freeze the backbone, cache the classifier
head's input features once per image, and train only a linear head on them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from synthaug.classify.curves import epoch_stats
from synthaug.classify.features import FeatureCache, feature_cache_path
from synthaug.config import StudyConfig

if TYPE_CHECKING:
    from synthaug.classify.cells import CellRunner
    from synthaug.classify.sampling import Labelled
    from synthaug.design import Cell


def linear_probe(
    runner: CellRunner, cell: Cell, train: Labelled, test: Labelled, timings: dict[str, float]
) -> tuple[np.ndarray, list[dict]]:
    """Train a linear head on the cell's cached features; its test probabilities and
    curves. Records the seconds the features took (`features_s`) and the head (`train_s`)."""
    cache = FeatureCache(feature_cache_path(runner.cfg))
    timings["features_s"] = cache.ensure(train[0] + test[0], runner.features)
    fit_start = time.perf_counter()
    head, history = train_linear_head(
        cache.matrix(train[0]),
        torch.tensor(train[1]),
        cache.matrix(test[0]),
        torch.tensor(test[1]),
        len(runner.classes),
        runner.cfg,
        cell.seed,
    )
    with torch.no_grad():
        probs = head(cache.matrix(test[0])).softmax(1).numpy()
    timings["train_s"] = time.perf_counter() - fit_start
    return probs, history


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
            train_loss, train_acc = epoch_stats(head(train_x), train_y)
            test_loss, test_acc = epoch_stats(head(test_x), test_y)
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
