"""The study's tables from cell metrics: Table 2 beside the paper and the baselines."""

import math

import pytest

from synthaug.analysis.tables import baselines, table2, table2_report
from synthaug.config import load_config
from synthaug.design import Cell

from .conftest import ROOT, smoke_config

T_975_1 = 12.706205  # Student-t quantile, two seeds (1 degree of freedom)


def _metrics(
    n_generated: int, n_real: int, seed: int, accuracy: float, mse: float, arm: str = "lora"
) -> dict:
    cell = Cell(n_generated, n_real, seed, arm)
    return {
        "cell": {
            "n_generated": n_generated,
            "n_real": n_real,
            "seed": seed,
            "arm": cell.arm,
            "kind": cell.kind,
        },
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


def test_arms_side_by_side_and_real_only_cells_shared() -> None:
    from synthaug.analysis.answer import arms_answer
    from synthaug.analysis.tables import arms, arms_report
    from synthaug.design import by_pair

    cfg = load_config(ROOT / "params/smoke.yaml", {"generation.arms": "[lora, base]"})
    base = [_metrics(5, 15, s, a, 1.0, "base") for s, a in enumerate((0.2, 0.4))]
    base += [_metrics(15, 0, s, 0.1, 1.0, "base") for s in (0, 1)]
    cells = CELLS + base
    # the base arm's groups hold its own mixes and every real-only cell, not the LoRA's mixes
    groups = by_pair(cells, "base")
    assert [m["accuracy"] for m in groups[(5, 15)]] == [0.2, 0.4]
    assert (0, 15) in groups and (10, 10) not in groups
    table = arms(cfg, cells)
    assert list(zip(table["arm"], table["n_generated"], table["n_real"], strict=True)) == [
        ("lora", 5, 15),
        ("lora", 10, 10),
        ("lora", 15, 0),
        ("base", 5, 15),
        ("base", 15, 0),
    ]
    report = arms_report(table)
    assert list(report.columns) == ["lora", "base"]
    assert report.loc["5 : 15", "base"] == "0.300 [-0.971, 1.571]"
    assert report.loc["generated only (CAS)", "lora"] == "0.350 [-0.285, 0.985]"
    assert report.loc["10 : 10", "base"] != report.loc["10 : 10", "base"]  # not run: NaN
    assert arms_answer(table) == [
        "the LoRA against the base arm: CAS 0.350 [-0.285, 0.985] against 0.100 [0.100, "
        "0.100]; within the CI in 2 of 2 training sets"
    ]


def test_the_filtered_arm_is_read_against_the_lora_arm() -> None:
    """The answer's filtered line puts the filter first: its CAS, then the LoRA arm's."""
    from synthaug.analysis.answer import arms_answer
    from synthaug.analysis.tables import arms

    cfg = load_config(ROOT / "params/smoke.yaml", {"generation.arms": "[lora, filtered]"})
    kept = [_metrics(15, 0, s, a, 1.0, "filtered") for s, a in enumerate((0.9, 0.92))]
    [line] = arms_answer(arms(cfg, CELLS + kept))
    assert line.startswith("the filtered arm against the LoRA arm: CAS 0.910 [")
    assert "against 0.350 [-0.285, 0.985]" in line and line.endswith("in 1 of 1 training sets")


def test_real_equivalent_reads_the_real_only_curve_in_log_count() -> None:
    import numpy as np

    from synthaug.analysis.efficiency import real_equivalent

    counts, curve = np.array([1, 4, 16]), np.array([0.2, 0.4, 0.6])
    assert real_equivalent(counts, curve, 0.4) == pytest.approx(4)
    assert real_equivalent(counts, curve, 0.3) == pytest.approx(2)  # halfway in log count
    assert real_equivalent(counts, curve, 0.5) == pytest.approx(8)
    assert real_equivalent(counts, curve, 0.1) == -math.inf
    assert real_equivalent(counts, curve, 0.7) == math.inf
    # a dip is flattened: more real images never count as worse
    dipped = np.array([0.2, 0.5, 0.4])
    assert real_equivalent(counts, dipped, 0.45) == pytest.approx(4 ** (0.25 / 0.3))
    assert math.isnan(real_equivalent(counts[:1], curve[:1], 0.2))


def test_sample_efficiency_table_and_text() -> None:
    from synthaug.analysis.efficiency import efficiency_text, sample_efficiency

    cfg = load_config(
        ROOT / "params/smoke.yaml",
        {"generation.arms": "[lora, base]", "study.sample_efficiency.real_per_class": "[1, 4]"},
    )
    n = 5  # classes; the smoke sweep adds 2 generated images per class
    cells = [_metrics(0, 1 * n, s, a, 1.0) for s, a in enumerate((0.2, 0.2))]
    cells += [_metrics(0, 4 * n, s, a, 1.0) for s, a in enumerate((0.6, 0.6))]
    cells += [_metrics(2 * n, 1 * n, s, a, 1.0) for s, a in enumerate((0.4, 0.4))]
    cells += [_metrics(2 * n, 1 * n, s, a, 1.0, "base") for s, a in enumerate((0.1, 0.1))]
    table = sample_efficiency(cfg, cells, n).set_index(["series", "real_per_class"])
    lora = table.loc[("lora", 1)]
    assert lora["generated_per_class"] == 2 and lora["seeds"] == 2
    assert lora["real_equivalent_per_class"] == pytest.approx(2)  # 0.4: halfway, 1 -> 4
    assert lora["worth_real_per_class"] == pytest.approx(1)
    assert table.loc[("base", 1), "real_equivalent_per_class"] == -math.inf
    assert ("lora", 4) not in table.index  # not run
    lines = efficiency_text(table.reset_index())
    assert lines[0].startswith("lora: 2 synthetic images per class are worth")
    assert "1 → 2.0 (+1.0)" in lines[0]
    assert "1: below the smallest real-only point" in lines[1]


def test_intervals_with_generator_seeds_are_over_their_means() -> None:
    """Two generator seeds x two classifier seeds: the mix's CI is the t-interval of the
    two per-generator-seed means; the real-only baseline's stays over classifier seeds."""
    cfg = smoke_config(ROOT / "runs", **{"study.generator_seeds": "[0, 1]"})
    cells = []
    for g, accuracies in ((0, (0.6, 0.7)), (1, (0.3, 0.5))):
        for seed, accuracy in enumerate(accuracies):
            metrics = _metrics(5, 15, seed, accuracy, 1.0)
            metrics["cell"]["generator_seed"] = g
            cells.append(metrics)
    cells += [_metrics(0, 15, seed, a, 1.0) for seed, a in enumerate((0.7, 0.9))]
    row = table2(cfg, cells).iloc[0]
    means = [0.65, 0.4]  # per generator seed
    half = T_975_1 * (0.65 - 0.4) / 2  # t(0.975, 1) * sd of the means / sqrt(2)
    assert row.accuracy == pytest.approx(0.525)
    assert row.accuracy_ci_low == pytest.approx(sum(means) / 2 - half)
    assert row.accuracy_ci_high == pytest.approx(sum(means) / 2 + half)
    assert row.accuracy_generator_seeds == 2 and row.real_only_accuracy_generator_seeds == 1
    assert row.real_only_accuracy_ci_high == pytest.approx(0.8 + T_975_1 * 0.1)
    # one-way random effects: MSB = 2 * var(means) = 0.0625, MSW = mean(0.005, 0.02)
    within, between = 0.0125, 2 * (0.125**2 * 2)
    share = ((between - within) / 2) / ((between - within) / 2 + within)
    assert row.accuracy_generator_share == pytest.approx(share)
    report = table2_report(table2(cfg, cells))
    assert report.iloc[0]["seeds"] == "2 x 2"
