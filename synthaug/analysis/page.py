"""The analysis page (notebook 04): each of its tables and texts as one function of the
study (`context.Study`), called from a cell of its own. Its figures are in `figures`."""

from __future__ import annotations

import pandas as pd
from IPython.display import Markdown

from synthaug.analysis import answer as words
from synthaug.analysis import paper_mse, quality, tables
from synthaug.analysis.context import Study
from synthaug.config import StudyConfig
from synthaug.efficiency import efficiency_text
from synthaug.machinery import provenance
from synthaug.report import page_command


def open_study(cfg: StudyConfig) -> Study:
    """The page's study, its environment recorded; nothing is computed yet."""
    provenance.record(cfg, "04_analysis")
    return Study(cfg)


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


def table2(study: Study) -> pd.DataFrame:
    return tables.table2_report(study.table2)


def baselines(study: Study) -> pd.DataFrame:
    return tables.baselines_report(study.baselines)


def variance(study: Study) -> pd.DataFrame:
    return tables.variance(study.table2, study.baselines).round(3)


def arms(study: Study) -> pd.DataFrame:
    return tables.arms_report(study.arms)


def sample_efficiency(study: Study) -> Markdown:
    return Markdown("\n".join(f"- {line}" for line in efficiency_text(study.sample_efficiency)))


def table1(study: Study) -> pd.DataFrame:
    return tables.table1(study.cfg)


def mse_readings(study: Study) -> pd.DataFrame:
    return paper_mse.mse_readings(study.cfg, study.paper_cells).round(4)


def paper_mse_fit(study: Study) -> pd.DataFrame:
    return study.paper_mse_fit[0].round(4)


def paper_mse_text(study: Study) -> Markdown:
    return Markdown(study.paper_mse_fit[1])


def ceilings(study: Study) -> pd.DataFrame:
    return study.ceilings.round(3)


def memorisation(study: Study) -> pd.DataFrame:
    return quality.memorisation_summary(study.nearest).round(3)


def synthetic_quality(study: Study) -> pd.DataFrame:
    return study.quality.round(3)


def distribution_overall(study: Study) -> pd.DataFrame:
    return study.distribution.xs("all classes", level="class").round(3)


def distribution(study: Study) -> pd.DataFrame:
    return study.distribution.round(3)
