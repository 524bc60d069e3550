"""The study's tables from cell metrics: Table 2 beside the paper and the baselines."""

import math

import pytest

from synthaug.analysis import baselines, table2, table2_report
from synthaug.design import Cell

from .conftest import smoke_config

T_975_1 = 12.706205  # Student-t quantile, two seeds (1 degree of freedom)


def _metrics(n_generated: int, n_real: int, seed: int, accuracy: float, mse: float) -> dict:
    cell = Cell(n_generated, n_real, seed)
    return {
        "cell": {"n_generated": n_generated, "n_real": n_real, "seed": seed, "kind": cell.kind},
        "accuracy": accuracy,
        "mse": mse,
    }


# The smoke profile's design: mixes 5:15, 10:10, 15:5 of 20 images, seeds 0 and 1. The
# 15:5 mix has not run yet, so Table 2 has two rows. (generated, real): (accuracy, mse) of
# seed 0, then of seed 1.
RESULTS = {
    (5, 15): [(0.6, 1.0), (0.8, 3.0)],
    (0, 15): [(0.7, 2.0), (0.9, 2.0)],
    (10, 10): [(0.5, 2.0), (0.5, 2.0)],
    (0, 10): [(0.6, 2.0), (0.6, 2.0)],
    (0, 20): [(0.9, 1.0), (1.0, 1.0)],
    (15, 0): [(0.3, 4.0), (0.4, 4.0)],
}
CELLS = [
    _metrics(g, r, seed, accuracy, mse)
    for (g, r), runs in RESULTS.items()
    for seed, (accuracy, mse) in enumerate(runs)
]


def test_table2_rows_are_the_mixes_with_seeds_intervals_and_their_real_only_baseline(
    tmp_path,
) -> None:
    cfg = smoke_config(tmp_path)
    table = table2(cfg, CELLS).set_index("share")
    assert list(table.index) == [0.25, 0.5]
    first = table.loc[0.25]
    assert (first["n_generated"], first["n_real"], first["seeds"]) == (5, 15, 2)
    assert first["accuracy"] == pytest.approx(0.7) and first["mse"] == pytest.approx(2.0)
    # two seeds 0.6 and 0.8: standard error 0.1, half-width t(0.975, 1) * 0.1
    assert first["accuracy_ci_high"] - 0.7 == pytest.approx(T_975_1 * 0.1, rel=1e-5)
    assert first["real_only_accuracy"] == pytest.approx(0.8)  # 0:15, the same real images
    assert math.isnan(first["paper_accuracy"])  # the paper has no 25% mix
    second = table.loc[0.5]
    assert second["accuracy_ci_low"] == second["accuracy_ci_high"] == pytest.approx(0.5)
    assert second["real_only_accuracy"] == pytest.approx(0.6)  # 0:10
    assert second["paper_accuracy"] == pytest.approx(0.9434)  # the paper's 5000:5000 row


def test_baselines_are_full_real_cas_and_real_of_the_cas_count(tmp_path) -> None:
    cfg = smoke_config(tmp_path)
    table = baselines(cfg, CELLS).set_index("baseline")
    assert table.loc["real only, full size", "accuracy"] == pytest.approx(0.95)
    assert table.loc["generated only (CAS)", "accuracy"] == pytest.approx(0.35)
    assert table.loc["generated only (CAS)", "n_generated"] == 15
    assert table.loc["real only, same count as CAS", "accuracy"] == pytest.approx(0.8)
    assert (table["seeds"] == 2).all()


def test_table2_report_reads_as_the_paper_compares(tmp_path) -> None:
    report = table2_report(table2(smoke_config(tmp_path), CELLS))
    half = report.loc["10 : 10"]
    assert half["accuracy [95% CI]"] == "0.500 [0.500, 0.500]"
    assert half["real only, same real images"] == "0.600 [0.600, 0.600]"
    assert half["mix vs real only"] == "worse" and half["paper accuracy"] == "0.943"
    assert report.loc["5 : 15", "mix vs real only"] == "within the CI"
    assert report.loc["5 : 15", "paper accuracy"] == ""  # the paper has no 25% mix
