import math

import numpy as np
import pytest

from synthaug.design import runs_interval
from synthaug.metrics import (
    METRICS,
    brier,
    classification_report,
    cross_entropy,
    mean_ci,
    paper_mse,
    prdc,
)

PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
TRUE = np.array([0, 1, 1, 2])  # predictions: 0, 2, 1, 2 -> one mistake (1 predicted as 2)


def test_each_metric_returns_what_the_registry_says() -> None:
    """A `number` metric gives a float or count, a `table` one a dict or list; the analysis
    takes intervals of the numbers only and names the metric it refuses."""
    report = classification_report(PROBS, TRUE, ["a", "b", "c"])
    for name, metric in METRICS.items():
        expected = (int, float) if metric.kind == "number" else (dict, list)
        assert isinstance(report[name], expected), name
    runs = [{"cell": {"generator_seed": 0}, **report}] * 2
    assert runs_interval(runs, "accuracy")["accuracy"] == 0.75
    with pytest.raises(KeyError, match="'confusion' is not a number metric"):
        runs_interval(runs, "confusion")


def test_report_against_hand_computed_values() -> None:
    report = classification_report(PROBS, TRUE, ["a", "b", "c"])
    assert report["accuracy"] == 0.75
    assert report["confusion"] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    # F1: a = 1; b: precision 1, recall 0.5 -> 2/3; c: precision 0.5, recall 1 -> 2/3
    assert report["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert report["per_class_accuracy"] == {"a": 1.0, "b": 0.5, "c": 1.0}
    # mse of class indices: one error of size (2 - 1) -> 1 / 4
    assert report["mse"] == 0.25
    assert report["loss"] == pytest.approx(
        -(np.log(0.7) + np.log(0.3) + np.log(0.5) + np.log(0.8)) / 4
    )
    # Brier, image 2: (0.1)^2 + (0.3-1)^2 + (0.6)^2 = 0.86
    expected = ((0.09 + 0.04 + 0.01) + 0.86 + (0.04 + 0.25 + 0.09) + (0.01 + 0.01 + 0.04)) / 4
    assert report["brier"] == pytest.approx(expected)


def test_mse_grows_with_index_distance() -> None:
    assert paper_mse(np.array([0, 0]), np.array([0, 0])) == 0
    assert paper_mse(np.array([0]), np.array([3])) == 9


def test_perfect_predictions() -> None:
    probs = np.eye(3)
    assert brier(probs, np.arange(3)) == 0
    assert cross_entropy(probs, np.arange(3)) < 1e-9


def test_mean_ci_is_a_t_interval() -> None:
    interval = mean_ci([0.8, 0.9, 1.0])
    # t(0.975, 2) = 4.3027, sd = 0.1, n = 3
    assert interval.mean == pytest.approx(0.9)
    assert interval.high - interval.mean == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    assert math.isnan(mean_ci([0.5]).low)
    assert mean_ci([0.7, 0.7]).low == mean_ci([0.7, 0.7]).high == pytest.approx(0.7)


def test_frechet_distance_of_known_gaussians() -> None:
    from synthaug.metrics import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    # same covariance, mean shifted by (2, 0, 0): distance |shift|^2 = 4
    assert frechet_distance(a, a + [2.0, 0, 0]) == pytest.approx(4.0, abs=1e-6)
    # N(0, I) vs N(0, 4I) in 3-d: trace(I + 4I - 2*2I) = 3
    assert frechet_distance(a, 2 * rng.normal(size=(4000, 3))) == pytest.approx(3.0, rel=0.1)


def test_frechet_distance_matches_the_matrix_square_root_form() -> None:
    """Fewer images than dimensions (rank-deficient covariances), as in the per-class
    quality table: the eigenvalue form equals Tr(S_a + S_b - 2 sqrtm(S_a S_b))."""
    from scipy import linalg

    from synthaug.metrics import frechet_distance

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 96)), 1.5 * rng.normal(size=(50, 96)) + 0.3
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(
        cov_a + cov_b - 2 * np.real(linalg.sqrtm(cov_a @ cov_b))
    )
    assert frechet_distance(a, b) == pytest.approx(reference, rel=1e-6)


def test_every_mse_reading_lies_within_its_bounds_at_that_accuracy() -> None:
    from synthaug.metrics import classification_report, reading_bounds

    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        probs = rng.dirichlet(np.full(n, 0.3), size=200)
        truth = rng.integers(0, n, size=200)
        report = classification_report(probs, truth, [str(i) for i in range(n)])
        bounds = reading_bounds(report["accuracy"], n)
        for name, value in report["mse_readings"].items():
            low, high = bounds[name]
            assert low - 1e-9 <= value <= high + 1e-9, (name, value, low, high)


def test_paper_mse_cannot_be_a_probability_error() -> None:
    from synthaug.analysis.paper_mse import paper_mse_fit

    table, text = paper_mse_fit()
    reach = table["paper rows it can reach"].to_dict()
    assert reach == {
        "index_mse": "7 of 7",
        "index_rmse": "7 of 7",
        "onehot_mse": "0 of 7",
        "brier": "0 of 7",
        "cross_entropy": "7 of 7",
    }
    assert "cannot be onehot_mse or brier" in text


def test_prdc_of_identical_disjoint_and_collapsed_sets() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 8))
    same = prdc(real, real.copy(), k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] >= 1.0  # each fake sits in its own ball and k-ish others
    far = prdc(real, rng.normal(size=(200, 8)) + 100, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # fakes collapsed onto one real image: precise, but they cover almost nothing
    collapsed = prdc(real, np.repeat(real[:1], 50, axis=0) + 1e-6, k=5)
    assert collapsed["precision"] == 1.0 and collapsed["coverage"] < 0.1
    assert collapsed["recall"] < 0.05
    # fakes from the same distribution: every metric near its ideal value
    fresh = prdc(real, rng.normal(size=(200, 8)), k=5)
    assert fresh["precision"] > 0.8 and fresh["recall"] > 0.8 and fresh["coverage"] > 0.8
    assert 0.7 < fresh["density"] < 1.3
    with pytest.raises(ValueError, match="more than k=5"):
        prdc(real[:5], real, k=5)


def test_nested_interval_over_generator_seeds_and_variance_share() -> None:
    from synthaug.metrics import generator_share, nested_interval_columns

    one = nested_interval_columns({0: [0.5, 0.7, 0.6]}, "acc")
    assert one["acc_generator_seeds"] == 1 and math.isnan(one["acc_generator_share"])
    assert (one["acc_ci_low"], one["acc_ci_high"]) == pytest.approx(
        (mean_ci([0.5, 0.7, 0.6]).low, mean_ci([0.5, 0.7, 0.6]).high)
    )
    three = nested_interval_columns({0: [0.5, 0.6], 1: [0.7, 0.8], 2: [0.2, 0.3]}, "acc")
    assert three["acc"] == pytest.approx((0.55 + 0.75 + 0.25) / 3)
    assert three["acc_ci_low"] == pytest.approx(mean_ci([0.55, 0.75, 0.25]).low)
    # all the spread between generator seeds: share 1; all within: share 0
    assert generator_share([[0.2, 0.2], [0.8, 0.8]]) == pytest.approx(1.0)
    assert generator_share([[0.2, 0.8], [0.8, 0.2]]) == pytest.approx(0.0)
