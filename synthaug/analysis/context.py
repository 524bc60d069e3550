"""The finished study as the analysis page reads it: each part computed on first use, once.

Opening a `Study` computes nothing. The cheap parts (the cells' metrics, Table 2, the
baselines) are read when a cell first shows one; the expensive ones (backbone features of
the synthetic sets, the ceilings' probes and VAE pass, the nearest-neighbour search) only
when a cell that shows them runs, and once however many cells show them. Features land in
the run's feature cache, so a rerun of the page computes none of them again.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import pandas as pd

from synthaug.analysis import paper_mse, quality, tables
from synthaug.analysis.efficiency import sample_efficiency
from synthaug.classify import CellRunner
from synthaug.classify.results import finished_cells
from synthaug.config import StudyConfig
from synthaug.data import prepare_data


def _from_cells(table: Callable[[StudyConfig, list[dict]], pd.DataFrame]) -> cached_property:
    """A study part made by `table` from the config and the finished cells, once."""
    return cached_property(lambda study: table(study.cfg, study.cells))


class Study:
    """One study's cells and what the report computes from them, each computed once."""

    def __init__(self, cfg: StudyConfig) -> None:
        self.cfg = cfg

    @cached_property
    def runner(self) -> CellRunner:
        """One backbone and one feature cache for the parts that need features (the
        backbone loads on use)."""
        return CellRunner(self.cfg)

    @cached_property
    def n_classes(self) -> int:
        return len(prepare_data(self.cfg).classes)

    @cached_property
    def cells(self) -> list[dict]:
        """The metrics of every finished study cell, read from the run folder."""
        return finished_cells(self.cfg)

    @cached_property
    def paper_cells(self) -> list[dict]:
        """The finished cells of the paper's design (its mixes and the baselines)."""
        return tables.paper_design(self.cfg, self.cells)

    table2 = _from_cells(tables.table2)
    baselines = _from_cells(tables.baselines)
    arms = _from_cells(tables.arms)

    @cached_property
    def sample_efficiency(self) -> pd.DataFrame:
        return sample_efficiency(self.cfg, self.cells, self.n_classes)

    @cached_property
    def distribution(self) -> pd.DataFrame:
        """Each arm's quality table (`quality.quality`), stacked under an `arm` level."""
        return pd.concat(
            {
                arm: quality.quality(self.runner, self.cells, arm)
                for arm in self.cfg.generation.arms
            },
            names=["arm"],
        )

    @property
    def quality(self) -> pd.DataFrame:
        """The LoRA arm's quality table."""
        return self.distribution.loc["lora"]

    @cached_property
    def paper_mse_fit(self) -> tuple[pd.DataFrame, str]:
        """Which readings of the paper's "mse" reach its Table 2, and the verdict in words."""
        return paper_mse.paper_mse_fit()

    @cached_property
    def ceilings(self) -> pd.DataFrame:
        return quality.ceilings(self.runner, self.cells)

    @cached_property
    def nearest(self) -> pd.DataFrame:
        """Each generated and real test image's nearest LoRA-training image (empty before
        the first generator seed's set exists)."""
        if not self.cfg.first_generator().paths.generated_manifest.exists():
            return pd.DataFrame()
        return quality.nearest_lora_images(self.runner)
