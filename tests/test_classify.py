import csv
import shutil
from collections import Counter
from typing import get_args

import numpy as np
import pytest
import torch
from PIL import Image

from synthaug.classify import CellRunner, run_cell
from synthaug.classify.backbone import Backbone
from synthaug.classify.batches import DeviceImages
from synthaug.classify.features import FeatureCache, feature_cache_path
from synthaug.classify.results import finished_cells, is_done, read_cell
from synthaug.classify.sampling import sample_balanced
from synthaug.classify.trainers import TRAINERS
from synthaug.config import ClassifierConfig, load_config
from synthaug.data import DataError, prepare_data
from synthaug.design import Cell, default_real_count, study_cells
from synthaug.io import SettingsMismatch

from .conftest import ROOT, UCMERCED, smoke_config


def test_study_cells_cover_mixes_baselines_and_seeds() -> None:
    one_arm = {"generation.arms": "[lora]", "study.sample_efficiency": "null"}
    cfg = load_config(ROOT / "params" / "smoke.yaml", one_arm)
    cells = study_cells(cfg, n_classes=5)
    pairs = list(dict.fromkeys((c.n_generated, c.n_real) for c in cells))
    # generated-only (CAS) has as many images as the largest generated part of a mix
    assert pairs == [(5, 15), (0, 15), (10, 10), (0, 10), (15, 5), (0, 5), (0, 20), (15, 0)]
    assert len(cells) == len(pairs) * len(cfg.study.seeds)
    assert {c.kind for c in cells} == {"mix", "real_only", "generated_only"}
    assert default_real_count(cfg.study, 5) == 15


def test_study_cells_of_every_arm_and_the_sweep() -> None:
    cfg = load_config(ROOT / "params" / "smoke.yaml")  # arms lora, base, img2img, filtered
    cells = {(c.n_generated, c.n_real, c.arm) for c in study_cells(cfg, n_classes=5)}
    real_only = {c for c in cells if c[0] == 0}
    # real-only cells belong to no arm: listed once, under lora
    assert real_only == {(0, n, "lora") for n in (5, 10, 15, 20)}
    for arm in ("lora", "base", "img2img", "filtered"):
        assert {(5, 15, arm), (10, 10, arm), (15, 5, arm), (15, 0, arm)} <= cells  # mixes, CAS
        # the sweep: 1, 2, 4 real per class, plus 2 generated per class (10 images)
        assert {(10, 5, arm), (10, 10, arm), (10, 20, arm)} <= cells
    assert len(cells) == 4 + 4 * 4 + 4 * 2  # (10, 10) is a mix and a sweep point
    assert Cell(0, 5, 0, "base") == Cell(0, 5, 0) and Cell(10, 5, 1, "base").name == (
        "base-gen10-real5-seed1"
    )


def test_sampling_is_balanced_seeded_and_never_touches_test(tmp_path, ucmerced) -> None:
    manifest = prepare_data(smoke_config(tmp_path))
    pool = manifest.split("pool")
    a = sample_balanced(pool, 15, manifest.classes, seed=0, tag="real")
    assert Counter(r.label for r in a) == dict.fromkeys(manifest.classes, 3)
    assert a == sample_balanced(pool, 15, manifest.classes, seed=0, tag="real")
    assert {r.ref for r in a} != {
        r.ref for r in sample_balanced(pool, 15, manifest.classes, seed=1, tag="real")
    }
    test_refs = {r.ref for r in manifest.split("test")}
    assert not {r.ref for r in a} & test_refs
    with pytest.raises(DataError, match="has 8 images, the cell needs 9"):
        sample_balanced(pool, 45, manifest.classes, seed=0, tag="real")


def fake_generated_set(cfg, split: str = "pool") -> None:
    """Stands in for 02_generate's output format (ImageFolder + manifest.csv) using real
    images of `split`, so mixing can be tested on its own."""
    manifest = prepare_data(cfg)
    out = cfg.paths.generated
    with open(out.parent / "generated.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "sha256"])
        for record in manifest.split(split):
            (out / record.label).mkdir(parents=True, exist_ok=True)
            shutil.copy(UCMERCED / record.ref, out / record.ref)
            writer.writerow([record.ref, record.label, record.sha256])
    shutil.move(out.parent / "generated.csv", out / "manifest.csv")


def test_mix_cell_trains_writes_metrics_and_skips_on_rerun(tmp_path, ucmerced) -> None:
    cfg = smoke_config(tmp_path)
    fake_generated_set(cfg)
    metrics = run_cell(cfg, n_generated=10, n_real=None, seed=0)
    assert metrics["cell"] == {
        "n_generated": 10,
        "n_real": 10,
        "seed": 0,
        "arm": "lora",
        "generator_seed": 0,
        "name": "gen10-real10-seed0",
        "kind": "mix",
    }
    origins = Counter(split for split, _, _ in metrics["train_images"])
    assert origins == {"pool": 10, "generated": 10}
    assert len(metrics["test_images"]) == 20
    assert len(metrics["history"]) == cfg.classifier.epochs
    # the reported numbers are those of the trained head's test predictions
    confusion = np.array(metrics["confusion"])
    assert confusion.sum() == 20 and confusion.sum(1).tolist() == [4] * 5
    assert metrics["accuracy"] == pytest.approx(np.trace(confusion) / 20)
    assert metrics["history"][-1]["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert list(metrics["per_class_accuracy"].values()) == pytest.approx(np.diag(confusion) / 4)
    path = cfg.run_dir / "cells" / "gen10-real10-seed0" / "metrics.json"
    stamp = path.stat().st_mtime_ns
    assert run_cell(cfg, 10, None, 0)["accuracy"] == metrics["accuracy"]
    assert path.stat().st_mtime_ns == stamp  # skipped: same config
    changed = smoke_config(tmp_path, **{"classifier.epochs": 2})
    with pytest.raises(SettingsMismatch, match=r"config_hash differ.*new `name`, or delete"):
        run_cell(changed, 10, None, 0)  # other settings never overwrite a result
    assert not is_done(changed, Cell(10, 10, 0))
    assert path.stat().st_mtime_ns == stamp


def test_real_only_baseline_uses_the_mix_real_images(tmp_path, ucmerced) -> None:
    cfg = smoke_config(tmp_path)
    fake_generated_set(cfg)
    runner = CellRunner(cfg)
    mix = runner.run(Cell(10, 10, 0))
    real = runner.run(Cell(0, 10, 0))
    assert {tuple(x) for x in real["train_images"]} == {
        tuple(x) for x in mix["train_images"] if x[0] == "pool"
    }


def test_missing_generated_set_is_explained(tmp_path, ucmerced) -> None:
    with pytest.raises(DataError, match="run the generate stage"):
        run_cell(smoke_config(tmp_path), n_generated=5, n_real=None, seed=0)


def test_full_fine_tune_mode(tmp_path, ucmerced) -> None:
    cfg = smoke_config(
        tmp_path,
        **{"classifier.mode": "full", "classifier.epochs": 6, "classifier.learning_rate": 1e-3},
    )
    metrics = run_cell(cfg, n_generated=0, n_real=None, seed=0)
    losses = [h["train_loss"] for h in metrics["history"]]
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4, 5, 6]
    # the whole model learns its 20 training images (measured: 1.60 -> 1.30, 0.3 -> 0.8)
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False))
    assert losses[-1] < 0.9 * losses[0] and metrics["history"][-1]["train_accuracy"] >= 0.6
    assert "features_s" not in metrics["timings"]


def test_images_decoded_once_train_the_cell_the_dataloader_trains(tmp_path, ucmerced) -> None:
    """`classifier.preload` (decode once onto the device, flip and normalise there, one
    read-back an epoch) gives the DataLoader path's pixels bit for bit and so its curves,
    with a mix of real and generated images and the flips of both. The curves agree to
    float32 rounding, not bit for bit: the two paths' batches sit differently in memory,
    which some CPUs' kernels round differently (seen on an AMD EPYC, one batch's loss one
    float32 step apart in epoch 2; bit for bit on an Intel Xeon)."""
    settings = {"classifier.mode": "full", "classifier.epochs": 3, "classifier.learning_rate": 1e-3}
    results = []
    for preload in (True, False):
        cfg = smoke_config(tmp_path / str(preload), **settings, **{"classifier.preload": preload})
        fake_generated_set(cfg)
        results.append(run_cell(cfg, n_generated=10, n_real=10, seed=3))
    ours, theirs = results
    for mine, other in zip(ours["history"], theirs["history"], strict=True):
        assert mine == pytest.approx(other, rel=1e-6)
    assert ours["accuracy"] == theirs["accuracy"]
    # equal with 0 loader workers, yet in the cell's hash: with workers > 0 each worker
    # reseeds Python's random, so the DataLoader path's flips differ from these
    assert ours["config_hash"] != theirs["config_hash"]
    runner = CellRunner(cfg)
    train = runner.training_set(Cell(10, 10, 3))
    backbone = Backbone(cfg, runner.classes)
    flips = torch.tensor([i % 2 == 0 for i in range(len(train))])
    preloaded = DeviceImages(train, runner.load, backbone).batch(torch.arange(len(train)), flips)
    mirror = Image.Transpose.FLIP_LEFT_RIGHT
    images = [runner.load(r) for r in train]
    loaded = backbone.pixels(
        i.transpose(mirror) if f else i for i, f in zip(images, flips.tolist(), strict=True)
    )
    assert torch.equal(preloaded, loaded)
    assert ours["history"][0]["train_loss"] != ours["history"][-1]["train_loss"]


def test_cpu_profile_real_only_is_far_above_chance(tmp_path, ucmerced) -> None:
    """DINOv2-small linear probe on real UC Merced: 21 classes, chance is 0.048."""
    cfg = load_config(ROOT / "params" / "ucmerced-cpu.yaml", {"output_dir": str(tmp_path)})
    metrics = run_cell(cfg, n_generated=0, n_real=None, seed=0)
    assert metrics["cell"]["n_real"] == 1050 and metrics["n_test"] == 420
    assert metrics["accuracy"] > 0.75


def test_frechet_distance_is_computed_in_full_fine_tune_mode(tmp_path, ucmerced) -> None:
    """With no linear-probe cache, the analysis computes the frozen backbone's features
    itself. The stand-in generated set holds the pool's own images: distance ~0."""
    from synthaug.analysis.quality import quality

    cfg = smoke_config(tmp_path, **{"classifier.mode": "full"})
    fake_generated_set(cfg)
    table = quality(CellRunner(cfg), cells=[])
    classes = ["agricultural", "beach", "forest", "freeway", "harbor"]
    assert list(table.index) == [*classes, "all classes"]
    assert (table.loc[classes, "n_per_side"] == 8).all()
    assert table.loc["all classes", "n_per_side"] == 40
    assert table["frechet_distance"].abs().max() < 1e-3
    # the same images on both sides: every real ball holds its own copy
    overall = table.loc["all classes", ["precision", "recall", "coverage"]]
    assert (overall == 1.0).all() and table.loc["all classes", "density"] >= 1.0


def test_a_generator_that_copies_its_lora_images_is_caught(tmp_path, ucmerced) -> None:
    """Generated images that are the LoRA-training images sit at distance 0 from them,
    far nearer than new real images of the class."""
    from synthaug.analysis.quality import memorisation_summary, nearest_lora_images

    cfg = smoke_config(tmp_path)
    fake_generated_set(cfg, split="lora")
    nearest = nearest_lora_images(CellRunner(cfg))
    assert set(nearest["kind"]) == {"generated", "real test"}
    copies = nearest[nearest["kind"] == "generated"]
    assert len(copies) == 20 and copies["distance"].abs().max() < 1e-5
    assert (copies["ref"] == copies["nearest_lora_ref"]).all()
    summary = memorisation_summary(nearest)
    assert (summary["real test"] > summary["generated"]).all()


def test_ceilings_train_on_lora_images_at_the_generator_resolution(tmp_path, ucmerced) -> None:
    from synthaug.analysis.quality import ceilings, vae_roundtrip

    cfg = smoke_config(tmp_path)
    runner = CellRunner(cfg)
    table = ceilings(runner, cells=[])
    assert list(table.columns) == ["lora_images_at_32px", "lora_images_through_vae_at_32px"]
    assert table.index[-1] == "all classes" and len(table) == 6
    assert table.to_numpy().min() >= 0 and table.to_numpy().max() <= 1
    # the VAE column is the base's own reconstructions: 32 px images, not the inputs
    image = runner.load(runner.manifest.split("lora")[0])
    [decoded] = vae_roundtrip(cfg)([image])
    assert decoded.size == (32, 32)
    assert np.asarray(decoded).tobytes() != np.asarray(image.resize((32, 32))).tobytes()


def test_features_are_computed_only_for_the_images_the_cells_draw(tmp_path, ucmerced) -> None:
    """A pool far larger than the cells' draws costs only the draws (and the test split)."""
    cfg = smoke_config(tmp_path)
    fake_generated_set(cfg)
    runner = CellRunner(cfg)
    cells = [Cell(0, 10, 0), Cell(0, 10, 1), Cell(5, 5, 0)]
    runner.warm_features(cells)
    drawn = {r.sha256 for c in cells for r in runner.training_set(c)}
    test = {r.sha256 for r in runner.manifest.split("test")}
    cached = set(FeatureCache(feature_cache_path(cfg)).rows)
    assert cached == drawn | test
    assert len(cached) < len(runner.manifest.split("pool")) + len(test)
    assert run_cell(cfg, 0, 10, 1)["timings"]["features_s"] == 0.0  # nothing more computed


@pytest.mark.parametrize("mode", ["linear_probe", "full"])
def test_a_timm_backbone_trains_a_cell_in_either_mode(mode, tmp_path, ucmerced) -> None:
    """`classifier.model: tiny-timm`: a timm ViT saved as timm saves hub checkpoints, loaded
    with `create_model("local-dir:...")`, its data config's normalisation, a new head."""
    from synthaug.classify.backbone import Backbone
    from synthaug.timm_backbone import TimmClassifier

    cfg = smoke_config(
        tmp_path,
        **{
            "classifier.model": "tiny-timm",
            "classifier.mode": mode,
            "classifier.epochs": 6,
            "classifier.learning_rate": 1e-2 if mode == "linear_probe" else 1e-3,
        },
    )
    backbone = Backbone(cfg, prepare_data(cfg).classes)
    assert isinstance(backbone.model, TimmClassifier)
    assert backbone.mean == [0.5, 0.5, 0.5] and backbone.model.classifier.out_features == 5
    metrics = run_cell(cfg, n_generated=0, n_real=None, seed=0)
    assert metrics["backbone"] == "tiny-timm"
    losses = [h["train_loss"] for h in metrics["history"]]
    assert len(losses) == 6 and losses[-1] < losses[0]  # it learns its training images
    assert np.array(metrics["confusion"]).sum() == 20


def test_timm_features_feed_the_quality_metrics(tmp_path, ucmerced) -> None:
    from synthaug.analysis.quality import quality

    cfg = smoke_config(tmp_path, **{"classifier.model": "tiny-timm"})
    fake_generated_set(cfg)
    table = quality(CellRunner(cfg), cells=[])
    assert table.loc["all classes", "n_per_side"] == 40
    assert table["frechet_distance"].abs().max() < 1e-3  # the same images on both sides


def test_a_timm_model_at_another_input_size_is_refused_with_the_size(tmp_path) -> None:
    from synthaug.models import classifier_source
    from synthaug.timm_backbone import load_timm

    cfg = smoke_config(tmp_path, **{"classifier.model": "tiny-timm"})
    with pytest.raises(ValueError, match="set classifier.image_size: 32"):
        load_timm(classifier_source(cfg.classifier), 5, image_size=64)


def test_the_analysis_page_computes_each_part_only_when_a_cell_shows_it_and_once(
    tmp_path, ucmerced, monkeypatch
) -> None:
    """Opening the study and showing Table 2, the answer and a figure of the cells'
    accuracies load no backbone and no VAE; the quality table, its figure and the
    distribution tables compute each arm's quality once between them."""
    from synthaug.analysis import figures, page, quality

    cfg = smoke_config(tmp_path)
    fake_generated_set(cfg)
    run_cell(cfg, 10, 10, 0)
    run_cell(cfg, 0, 10, 0)

    def refuse(*_args, **_kwargs):
        pytest.fail("a model was loaded before a cell asked for it")

    study = page.open_study(cfg)
    with monkeypatch.context() as patched:
        patched.setattr("synthaug.classify.cells.Backbone", refuse)
        patched.setattr(quality, "vae_roundtrip", refuse)
        assert list(page.table2(study).index) == ["10 : 10"]
        assert "best mix, 10 generated + 10 real" in page.answer(study).data
        figures.accuracy_vs_share(study)
    computed = []
    measure = quality.quality
    monkeypatch.setattr(quality, "quality", lambda *a: computed.append(a[2]) or measure(*a))
    assert page.synthetic_quality(study).loc["all classes", "n_per_side"] == 40
    figures.synthetic_quality(study)
    page.distribution(study)
    assert computed == cfg.generation.arms


def test_a_metric_added_later_reaches_finished_cells_without_training(
    tmp_path, ucmerced, monkeypatch
) -> None:
    """Cells save their test probabilities; a metric registered after they ran is computed
    from them when the analysis reads the cells, and nothing is trained again."""
    from synthaug import metrics

    cfg = smoke_config(tmp_path)
    fake_generated_set(cfg)
    runner = CellRunner(cfg)
    cell = Cell(10, 10, 0)
    saved = runner.run(cell)
    path = cfg.paths.cell_metrics(cell.name)
    stamp = path.stat().st_mtime_ns

    def top2(probs, y_true, _classes):
        return float((np.argsort(probs, axis=1)[:, -2:] == y_true[:, None]).any(axis=1).mean())

    monkeypatch.setitem(metrics.METRICS, "top2_accuracy", metrics.Metric(top2, "number"))
    monkeypatch.setattr(
        "synthaug.classify.linear_probe.train_linear_head", lambda *a, **k: pytest.fail("retrained")
    )
    read = read_cell(cfg, cell)
    assert saved["accuracy"] <= read["top2_accuracy"] <= 1.0
    assert read["accuracy"] == saved["accuracy"]  # saved metrics are kept as they were
    assert path.stat().st_mtime_ns == stamp
    assert all("top2_accuracy" in m for m in finished_cells(cfg))


def test_every_classifier_mode_has_its_trainer() -> None:
    """`classifier.mode`'s values and the trainer registry `run_cell` looks up are the same."""
    modes = get_args(ClassifierConfig.model_fields["mode"].annotation)
    assert sorted(TRAINERS) == sorted(modes)
