"""The trainers a cell can use, by `classifier.mode`: each takes the cell's runner, the
cell, its labelled training and test images and a dict it records its seconds in, and
returns the test probabilities (n_test x n_classes) and the per-epoch curves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from synthaug.classify.fine_tune import full_fine_tune
from synthaug.classify.linear_probe import linear_probe

if TYPE_CHECKING:
    from synthaug.classify.cells import CellRunner
    from synthaug.classify.sampling import Labelled
    from synthaug.design import Cell


class Trainer(Protocol):
    def __call__(
        self,
        runner: CellRunner,
        cell: Cell,
        train: Labelled,
        test: Labelled,
        timings: dict[str, float],
    ) -> tuple[np.ndarray, list[dict]]: ...


TRAINERS: dict[str, Trainer] = {"linear_probe": linear_probe, "full": full_fine_tune}
