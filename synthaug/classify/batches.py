"""Full fine-tuning's batches: from DataLoaders that decode every image every epoch, or
from the images decoded once onto the device (`classifier.preload`), bit for bit alike."""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from PIL import Image

from synthaug.classify.backbone import Backbone
from synthaug.classify.pixels import resized
from synthaug.data import ImageRecord


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


class PreloadedBatches:
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


class LoaderBatches:
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
