"""Classification metrics, the paper's "mse" made explicit, and seed aggregation."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def macro_f1(matrix: np.ndarray) -> float:
    tp = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[actual > 0].mean())


def cross_entropy(probs: np.ndarray, y_true: np.ndarray) -> float:
    picked = probs[np.arange(len(y_true)), y_true]
    return float(-np.log(np.clip(picked, 1e-12, None)).mean())


def paper_mse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The paper's undefined "mse", read as the mean squared difference between predicted
    and true class index (classes in alphabetical order): 0 when every prediction is right,
    larger when mistakes land on far-away indices. It depends on the class order, so it is
    reported for comparison with the paper only; the Brier score is the sound measure."""
    return float(np.mean((y_pred.astype(float) - y_true.astype(float)) ** 2))


def mse_readings(probs: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """Every plausible reading of the paper's undefined "mse", on the same predictions:
    squared and root squared class-index error, one-hot MSE (squared probability error
    averaged over classes), the Brier score (summed over classes) and cross-entropy."""
    y_pred = probs.argmax(axis=1)
    index_mse = paper_mse(y_true, y_pred)
    return {
        "index_mse": index_mse,
        "index_rmse": math.sqrt(index_mse),
        "onehot_mse": brier(probs, y_true) / probs.shape[1],
        "brier": brier(probs, y_true),
        "cross_entropy": cross_entropy(probs, y_true),
    }


def reading_bounds(accuracy: float, n_classes: int) -> dict[str, tuple[float, float]]:
    """The range each reading can take at this accuracy with this many classes, whatever
    the classifier: the index errors lie between every mistake being one index off and
    every mistake being n-1 off; one-hot MSE and Brier cannot exceed 2/n and 2; cross-entropy
    is at least (1 - accuracy) * log 2 (a wrong argmax leaves the truth at most 1/2) and
    has no upper bound."""
    wrong = 1 - accuracy
    far = (n_classes - 1) ** 2
    return {
        "index_mse": (wrong, wrong * far),
        "index_rmse": (math.sqrt(wrong), math.sqrt(wrong * far)),
        "onehot_mse": (0.0, 2 / n_classes),
        "brier": (0.0, 2.0),
        "cross_entropy": (wrong * math.log(2), math.inf),
    }


def brier(probs: np.ndarray, y_true: np.ndarray) -> float:
    """Mean over images of the squared distance between the probabilities and the one-hot truth."""
    onehot = np.eye(probs.shape[1])[y_true]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def per_class_accuracy(probs: np.ndarray, y_true: np.ndarray, classes: list[str]) -> dict:
    """Each class's share of its test images classified right (NaN for an absent class)."""
    matrix = confusion(y_true, probs.argmax(axis=1), len(classes))
    support = matrix.sum(axis=1)
    return {
        name: float(matrix[i, i] / support[i]) if support[i] else math.nan
        for i, name in enumerate(classes)
    }


@dataclass(frozen=True)
class Metric:
    """One per-cell metric, computed from a cell's test probabilities (images x classes),
    its true labels and the class names. `kind` is what it returns: a `number` (a float or
    count, which the analysis averages over seeds with an interval) or a `table` (a dict
    or nested list, per class or per pair of classes, which the analysis shows as it is)."""

    compute: Callable[[np.ndarray, np.ndarray, list[str]], float | int | dict | list]
    kind: Literal["number", "table"]


# Every per-cell metric. A cell saves its probabilities, so a metric added here reaches
# every finished cell (`classify.results.read_cell`) without training anything again.
METRICS: dict[str, Metric] = {
    "accuracy": Metric(lambda p, y, _c: float((p.argmax(axis=1) == y).mean()), "number"),
    "macro_f1": Metric(lambda p, y, c: macro_f1(confusion(y, p.argmax(axis=1), len(c))), "number"),
    "loss": Metric(lambda p, y, _c: cross_entropy(p, y), "number"),
    "mse": Metric(lambda p, y, _c: paper_mse(y, p.argmax(axis=1)), "number"),
    "brier": Metric(lambda p, y, _c: brier(p, y), "number"),
    "mse_readings": Metric(lambda p, y, _c: mse_readings(p, y), "table"),
    "per_class_accuracy": Metric(per_class_accuracy, "table"),
    "confusion": Metric(lambda p, y, c: confusion(y, p.argmax(axis=1), len(c)).tolist(), "table"),
    "n_test": Metric(lambda _p, y, _c: int(len(y)), "number"),
}


def number_metric(name: str) -> str:
    """`name`, checked to be a registered metric that returns a number (what an interval
    over seeds can be taken of)."""
    metric = METRICS.get(name)
    if metric is None or metric.kind != "number":
        numbers = sorted(n for n, m in METRICS.items() if m.kind == "number")
        raise KeyError(f"{name!r} is not a number metric of metrics.METRICS; those are {numbers}")
    return name


def classification_report(
    probs: np.ndarray, y_true: np.ndarray, classes: list[str], names=None
) -> dict:
    """The registry's metrics (all, or those in `names`) from predicted probabilities and
    true labels."""
    return {
        name: metric.compute(probs, y_true, classes)
        for name, metric in METRICS.items()
        if names is None or name in names
    }


@dataclass(frozen=True)
class Interval:
    """Mean over seeds with a two-sided 95% Student-t confidence interval."""

    mean: float
    low: float
    high: float
    n: int


def mean_ci(values: list[float], level: float = 0.95) -> Interval:
    """The mean with scipy's Student-t interval (bounds NaN for one value, the mean itself
    when every value is equal)."""
    # deferred: scipy is imported only for the Fréchet distance
    from scipy import stats

    data = np.asarray(values, dtype=float)
    mean = float(data.mean())
    if len(data) < 2:
        return Interval(mean, math.nan, math.nan, len(data))
    if np.all(data == data[0]):
        return Interval(mean, mean, mean, len(data))
    low, high = stats.t.interval(level, len(data) - 1, loc=mean, scale=stats.sem(data))
    return Interval(mean, float(low), float(high), len(data))


def nested_interval_columns(groups: dict[int, list[float]], name: str) -> dict[str, float]:
    """A value measured over generator seeds (the keys) x classifier seeds (each list):
    `{name}` the mean; with two or more generator seeds, its 95% CI is the t-interval of
    the per-generator-seed means (each generator seed is one independently trained LoRA
    and set; the classifier seeds are nested in it, so each mean carries their spread
    too), else the t-interval over the classifier seeds alone. `{name}_generator_seeds`
    counts the generator seeds the interval covers (1: classifier draws only), and
    `{name}_generator_share` is the share of variance between generator seeds (one-way
    random effects, balanced: (MSB - MSW) / n over that plus MSW; NaN where undefined)."""
    means = [float(np.mean(v)) for v in groups.values()]
    values = [x for v in groups.values() for x in v]
    interval = mean_ci(means if len(means) > 1 else values)
    return {
        name: float(np.mean(values)),
        f"{name}_ci_low": interval.low,
        f"{name}_ci_high": interval.high,
        f"{name}_generator_seeds": len(groups),
        f"{name}_generator_share": generator_share(list(groups.values())),
    }


def generator_share(groups: list[list[float]]) -> float:
    """The share of variance between groups (generator seeds) in a one-way random-effects
    model of balanced groups: sigma_g^2 / (sigma_g^2 + sigma_within^2), with sigma_g^2 =
    max(0, (MSB - MSW) / n); NaN with fewer than two groups or than two values a group."""
    if len(groups) < 2 or min(len(g) for g in groups) < 2:
        return math.nan
    n = float(np.mean([len(g) for g in groups]))
    within = float(np.mean([np.var(g, ddof=1) for g in groups]))
    between = n * float(np.var([np.mean(g) for g in groups], ddof=1))
    generator = max(0.0, (between - within) / n)
    total = generator + within
    return generator / total if total > 0 else math.nan


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows = images):
    |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)). With fewer images than feature
    dimensions the covariances are rank-deficient and the value is biased upward; compare
    values computed on the same counts only."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr (S_a S_b)^(1/2) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric
    # PSD matrix: two symmetric eigendecompositions instead of a general matrix square root.
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of `a` and of `b` (len(a) x len(b))."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.clip(squared, 0, None))


def _kth_neighbour_radii(points: np.ndarray, k: int) -> np.ndarray:
    """Each point's distance to its k-th nearest other point of the same set."""
    distances = _distances(points, points)
    np.fill_diagonal(distances, 0.0)
    return np.sort(distances, axis=1)[:, k]  # column 0 is the point itself


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et
    al. 2020) of `fake` against `real` (rows = images, Euclidean feature distance, k-NN
    balls). Precision: share of fakes inside some real image's ball; recall: share of
    reals inside some fake's ball; density: real balls holding each fake, over k (about 1
    for fakes drawn like the reals, unbounded above); coverage: share of real balls that
    hold a fake."""
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"prdc needs more than k={k} images per side ({len(real)}, {len(fake)})")
    real_radii = _kth_neighbour_radii(real, k)
    fake_radii = _kth_neighbour_radii(fake, k)
    between = _distances(real, fake)
    inside_real = between <= real_radii[:, None]
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((between <= fake_radii[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum() / (k * len(fake))),
        "coverage": float((between.min(axis=1) <= real_radii).mean()),
    }
