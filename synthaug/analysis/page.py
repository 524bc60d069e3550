"""The analysis page (notebook 04): each of its tables and texts as one function of the
study (`context.Study`), called from a cell of its own, and every value it shows passed
through `paths.shown` (`@_on_page`). Its figures are in `figures`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pandas as pd
from IPython.display import Markdown

from synthaug.analysis import answer as words
from synthaug.analysis import paper_mse, quality, tables
from synthaug.analysis.context import Study
from synthaug.analysis.efficiency import efficiency_text
from synthaug.analysis.report import page_command
from synthaug.config import StudyConfig
from synthaug.paths import shown
from synthaug.runtime import provenance

Part = TypeVar("Part", pd.DataFrame, Markdown)


def _on_page(part: Callable[[Study], Part]) -> Callable[[Study], Part]:
    """The page part `part`, with every text it shows (table cells, index, Markdown)
    passed through `paths.shown`: no page names this machine's folders."""

    @functools.wraps(part)
    def shown_part(study: Study) -> Part:
        return _shortened(part(study), study.cfg.run_dir)

    return shown_part


def _shortened(value: Part, run_dir: Path) -> Part:
    if isinstance(value, Markdown):
        return Markdown(shown(value.data, run_dir))
    table = value.copy()
    for column in table.select_dtypes(include="object").columns:
        table[column] = table[column].map(lambda v: shown(v, run_dir))
    if table.index.dtype == object:
        table.index = table.index.map(lambda v: shown(v, run_dir))
    return table


def open_study(cfg: StudyConfig) -> Study:
    """The page's study, its environment recorded; nothing is computed yet."""
    provenance.record(cfg, "04_analysis")
    return Study(cfg)


@_on_page
def answer(study: Study) -> Markdown:
    """The answer in bold, the conclusion, what the intervals cover, the models used and
    the page's command."""
    lines = words.answer(study.table2, study.baselines, study.n_classes)
    lines += words.arms_answer(study.arms)
    return Markdown(
        "\n\n".join(
            [
                "\n".join(f"**{line}**  " for line in lines),
                words.conclusion(study.table2, study.baselines),
                words.interval_note(study.cfg),
                words.models_used(study.cfg),
                page_command(study.cfg, "analysis"),
            ]
        )
    )


@_on_page
def table2(study: Study) -> pd.DataFrame:
    return tables.table2_report(study.table2)


@_on_page
def baselines(study: Study) -> pd.DataFrame:
    return tables.baselines_report(study.baselines)


@_on_page
def variance(study: Study) -> pd.DataFrame:
    return tables.variance(study.table2, study.baselines).round(3)


@_on_page
def arms(study: Study) -> pd.DataFrame:
    return tables.arms_report(study.arms)


@_on_page
def sample_efficiency(study: Study) -> Markdown:
    return Markdown("\n".join(f"- {line}" for line in efficiency_text(study.sample_efficiency)))


@_on_page
def table1(study: Study) -> pd.DataFrame:
    return tables.table1(study.cfg)


@_on_page
def mse_readings(study: Study) -> pd.DataFrame:
    return paper_mse.mse_readings(study.cfg, study.paper_cells).round(4)


@_on_page
def paper_mse_fit(study: Study) -> pd.DataFrame:
    return study.paper_mse_fit[0].round(4)


@_on_page
def paper_mse_text(study: Study) -> Markdown:
    return Markdown(study.paper_mse_fit[1])


@_on_page
def ceilings(study: Study) -> pd.DataFrame:
    return study.ceilings.round(3)


@_on_page
def memorisation(study: Study) -> pd.DataFrame:
    return quality.memorisation_summary(study.nearest).round(3)


@_on_page
def synthetic_quality(study: Study) -> pd.DataFrame:
    return study.quality.round(3)


@_on_page
def distribution_overall(study: Study) -> pd.DataFrame:
    return study.distribution.xs("all classes", level="class").round(3)


@_on_page
def distribution(study: Study) -> pd.DataFrame:
    return study.distribution.round(3)
