"""A cell's images: drawn class-balanced and seeded, so that a mix and its same-count
real baseline share their real images."""

from __future__ import annotations

import random
from collections import defaultdict

from synthaug.data import DataError, ImageRecord, spread


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


# A cell's images and their class indices, as the trainers take them
Labelled = tuple[list[ImageRecord], list[int]]
