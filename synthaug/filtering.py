"""The filtered arm: generate more than needed, keep per class what a classifier recognises.

The arm's candidates are `generation.oversample` x n images per class (n: the LoRA arm's
per-class count): the LoRA arm's own n images, then `generate.candidate_jobs` more from
the same seed sequence. A *scorer* sees only the LoRA split's real images (the images the
LoRA trained on: never the pool the cells draw from, never the test split): a linear head
on the study's classifier-backbone features, trained as the linear-probe cells train
theirs. Each candidate's score is the scorer's probability of its intended class; per
class the n highest (ties: lower index first) are kept, copied into the arm's folder and
listed in its `manifest.csv` (with score and rank). `candidates.csv` lists every
candidate with its score, rank and whether it was kept; `scorer.json` names the scorer
and its training images; `filter.json` what keeping cost.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from synthaug.classify.cells import CellRunner
from synthaug.classify.linear_probe import train_linear_head
from synthaug.config import StudyConfig
from synthaug.data import ImageRecord, spread
from synthaug.io import atomic_write_bytes, read_csv, read_json, write_csv, write_json

FILTERED = "filtered"
SCORER_RULE = (
    "linear head on the classifier backbone's features of the LoRA split's real images; "
    "score: its probability of the candidate's intended class; per class the highest kept"
)
CANDIDATE_FIELDS = ("file", "label", "index", "seed", "sha256", "score", "rank", "kept")


def keep_best(cfg: StudyConfig, candidate_seconds: float) -> dict:
    """Score every candidate, keep the best per class, write the arm's set and records;
    what it kept and what that cost. Generation shards that finish together keep once:
    the first holds the arm's lock, the others find its records."""
    out = cfg.paths.arm(FILTERED)
    with _held(out / ".keeping.lock"):
        if is_kept(cfg):
            return read_cost(cfg)
        return _keep_best(cfg, out, candidate_seconds)


@contextlib.contextmanager
def _held(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (released when the process ends, however it ends)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _keep_best(cfg: StudyConfig, out: Path, candidate_seconds: float) -> dict:
    start = time.perf_counter()
    runner = CellRunner(cfg)
    candidates = _candidates(cfg)
    scorer, record = train_scorer(runner, cfg)
    features = runner.feature_cache
    features.ensure([r for r, _ in candidates], runner.features)
    with torch.no_grad():
        probabilities = scorer(features.matrix([r for r, _ in candidates])).softmax(1)
    index = {name: i for i, name in enumerate(runner.classes)}
    scores = [float(probabilities[i, index[r.label]]) for i, (r, _) in enumerate(candidates)]
    kept = _rank(candidates, scores, spread(cfg.generation.count, runner.classes))
    _write_kept(cfg, out, kept)
    write_json(out / "scorer.json", record, indent=1)
    cost = _cost(cfg, len(candidates), candidate_seconds, time.perf_counter() - start)
    write_json(out / "filter.json", cost, indent=1)  # last: `is_kept` reads it as done
    return cost


def train_scorer(runner: CellRunner, cfg: StudyConfig) -> tuple[torch.nn.Linear, dict]:
    """The scorer: a linear head on the backbone's features of the LoRA split alone (the
    only images it is given), and the record that names it and its training images."""
    train = runner.manifest.split("lora")
    labels = torch.tensor([runner.classes.index(r.label) for r in train])
    runner.feature_cache.ensure(train, runner.features)
    x = runner.feature_cache.matrix(train)
    head, history = train_linear_head(
        x, labels, x, labels, len(runner.classes), cfg, cfg.generation.seed
    )
    record = {
        "rule": SCORER_RULE,
        "backbone": cfg.classifier.model,
        "head": {k: getattr(cfg.classifier, k) for k in ("epochs", "learning_rate", "batch_size")},
        "seed": cfg.generation.seed,
        "training_accuracy": history[-1]["train_accuracy"],
        "training_images": [[r.split, r.ref, r.sha256] for r in train],
    }
    return head, record


def _candidates(cfg: StudyConfig) -> list[tuple[ImageRecord, dict]]:
    """Every candidate as a record the image loader reads and its manifest row: the LoRA
    arm's images first (candidate indices 0 .. n-1), then the arm's own."""
    root = cfg.paths.root
    lora, own = cfg.paths.arm("lora"), cfg.paths.arm(FILTERED) / "candidates"
    found = []
    for folder in (lora, own):
        split = str(folder.relative_to(root))
        for row in read_csv(folder / "manifest.csv"):
            found.append((ImageRecord(row["file"], row["label"], row["sha256"], split), row))
    return found


def _rank(
    candidates: list[tuple[ImageRecord, dict]], scores: list[float], keep: dict[str, int]
) -> list[dict]:
    """Each candidate's row with its score, its rank in its class (1: the best; ties: the
    lower index first) and whether it is kept (rank <= the class's count)."""
    rows = [
        {**row, "source": f"{record.split}/{record.ref}", "score": round(score, 6)}
        for (record, row), score in zip(candidates, scores, strict=True)
    ]
    rows.sort(key=lambda r: (r["label"], -r["score"], _index(r["file"])))
    rank: dict[str, int] = {}
    for row in rows:
        rank[row["label"]] = rank.get(row["label"], 0) + 1
        row |= {"rank": rank[row["label"]], "kept": rank[row["label"]] <= keep[row["label"]]}
    return rows


def _index(file: str) -> int:
    """A candidate's index within its class, from its file name (`<class>/<index>.png`)."""
    return int(Path(file).stem)


def _write_kept(cfg: StudyConfig, out: Path, rows: list[dict]) -> None:
    """The kept images copied into the arm's folder, its manifest, and `candidates.csv`."""
    kept = [row for row in rows if row["kept"]]
    for row in kept:
        atomic_write_bytes(out / row["file"], (cfg.paths.root / row["source"]).read_bytes())
    manifest_fields = [*_manifest_fields(cfg), "score", "rank"]
    ordered = sorted(kept, key=lambda r: r["file"])
    write_csv(
        out / "manifest.csv", manifest_fields, ([r[f] for f in manifest_fields] for r in ordered)
    )
    candidate_rows = (
        [
            row["source"],
            row["label"],
            _index(row["file"]),
            row["seed"],
            row["sha256"],
            f"{row['score']:.6f}",
            row["rank"],
            row["kept"],
        ]
        for row in rows
    )
    write_csv(out / "candidates.csv", CANDIDATE_FIELDS, candidate_rows)


def _manifest_fields(cfg: StudyConfig) -> list[str]:
    """The columns of the LoRA arm's manifest, which every kept row carries."""
    with (cfg.paths.arm_manifest("lora")).open() as handle:
        return handle.readline().strip().split(",")


def _cost(cfg: StudyConfig, n_candidates: int, candidate_seconds: float, seconds: float) -> dict:
    """What keeping cost: candidates, the new ones' generation time (of the call that made
    them; 0 when an earlier call did), and the scoring time."""
    return {
        "candidates": n_candidates,
        "kept": cfg.generation.count,
        "oversample": cfg.generation.oversample,
        "new_candidates": n_candidates - cfg.generation.count,
        "new_candidates_seconds": candidate_seconds,
        "scoring_seconds": seconds,
    }


def is_kept(cfg: StudyConfig) -> bool:
    """The filter has run: the arm's records exist (its manifest is checked by the caller)."""
    out = cfg.paths.arm(FILTERED)
    return all((out / name).is_file() for name in ("candidates.csv", "scorer.json", "filter.json"))


def read_candidates(cfg: StudyConfig) -> list[dict]:
    """`candidates.csv` as rows, with numbers and flags parsed."""
    rows = read_csv(cfg.paths.arm(FILTERED) / "candidates.csv")
    return [
        {
            **r,
            "index": int(r["index"]),
            "score": float(r["score"]),
            "rank": int(r["rank"]),
            "kept": r["kept"] == "True",
        }
        for r in rows
    ]


def read_cost(cfg: StudyConfig) -> dict:
    return read_json(cfg.paths.arm(FILTERED) / "filter.json")
