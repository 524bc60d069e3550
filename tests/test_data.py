import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

from synthaug.config import DatasetConfig, SplitsConfig
from synthaug.data import (
    DataError,
    ImageLoader,
    decode_image,
    make_splits,
    open_source,
    prepare_data,
    read_manifest,
    scan_records,
    spread,
)
from synthaug.io import SettingsMismatch

from .conftest import smoke_config

CLASSES = ["beach", "forest", "harbor"]


def small_folder(ucmerced: Path, root: Path, per_class: int = 6) -> Path:
    """A real-image ImageFolder: the first `per_class` UC Merced images of three classes."""
    for label in CLASSES:
        (root / label).mkdir(parents=True)
        for src in sorted((ucmerced / label).iterdir())[:per_class]:
            shutil.copy(src, root / label / src.name)
    return root


def records_of(root: Path, **dataset):
    cfg = DatasetConfig(path=str(root), **dataset)
    return scan_records(open_source(cfg), cfg)


def test_smoke_manifest_is_stratified_disjoint_and_byte_identical(tmp_path, ucmerced) -> None:
    first = prepare_data(smoke_config(tmp_path / "a"))
    second = prepare_data(smoke_config(tmp_path / "b"))
    a = smoke_config(tmp_path / "a").paths.manifest.read_bytes()
    assert a == smoke_config(tmp_path / "b").paths.manifest.read_bytes()
    assert first == second
    counts = first.counts()
    assert all(
        counts["lora"][c] == 4 and counts["pool"][c] == 8 and counts["test"][c] == 4
        for c in first.classes
    )
    refs = {s: {r.ref for r in first.split(s)} for s in ("lora", "pool", "test")}
    assert not (
        refs["lora"] & refs["pool"] or refs["lora"] & refs["test"] or refs["pool"] & refs["test"]
    )
    hashes = [r.sha256 for r in first.records]
    assert len(set(hashes)) == len(hashes)


def test_other_seed_other_split(tmp_path, ucmerced) -> None:
    a = prepare_data(smoke_config(tmp_path / "a"))
    b = prepare_data(smoke_config(tmp_path / "b", **{"splits.seed": 1}))
    assert {r.ref for r in a.split("test")} != {r.ref for r in b.split("test")}


def test_manifest_cites_real_bytes(tmp_path, ucmerced) -> None:
    cfg = smoke_config(tmp_path)
    manifest = prepare_data(cfg)
    record = manifest.split("test")[0]
    import hashlib

    assert hashlib.sha256((ucmerced / record.ref).read_bytes()).hexdigest() == record.sha256
    image = ImageLoader(cfg.dataset)(record)
    assert image.mode == "RGB" and image.size == (256, 256)


def test_rerun_reuses_manifest_but_never_overwrites_other_settings(tmp_path, ucmerced) -> None:
    cfg = smoke_config(tmp_path)
    prepare_data(cfg)
    before = cfg.paths.manifest.stat().st_mtime_ns
    prepare_data(cfg)
    assert cfg.paths.manifest.stat().st_mtime_ns == before
    with pytest.raises(
        SettingsMismatch, match=r"other settings \(config_hash, splits differ.*new `name`"
    ):
        prepare_data(smoke_config(tmp_path, **{"splits.test": 3}))


def test_total_counts_spread_remainder_alphabetically(tmp_path, ucmerced) -> None:
    assert spread(7, ["b", "a", "c"]) == {"a": 3, "b": 2, "c": 2}
    root = small_folder(ucmerced, tmp_path / "ds")
    manifest = make_splits(records_of(root), SplitsConfig(unit="total", lora=4, test=5, pool=None))
    counts = manifest.counts()
    assert dict(counts["test"]) == {"beach": 2, "forest": 2, "harbor": 1}
    assert dict(counts["lora"]) == {"beach": 2, "forest": 1, "harbor": 1}
    assert sum(counts["pool"].values()) == 18 - 9


def test_missing_folder(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist; set dataset.path"):
        open_source(DatasetConfig(path=str(tmp_path / "nowhere")))


def test_unknown_class(tmp_path, ucmerced) -> None:
    root = small_folder(ucmerced, tmp_path / "ds")
    with pytest.raises(DataError, match=r"\['desert'\] are not folders"):
        open_source(DatasetConfig(path=str(root), classes=["beach", "desert"]))


def test_empty_class(tmp_path, ucmerced) -> None:
    root = small_folder(ucmerced, tmp_path / "ds")
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="empty has no images"):
        records_of(root)


def test_too_few_images_names_the_class_and_counts(tmp_path, ucmerced) -> None:
    root = small_folder(ucmerced, tmp_path / "ds", per_class=6)
    (root / "harbor" / sorted(p.name for p in (root / "harbor").iterdir())[0]).unlink()
    with pytest.raises(
        DataError,
        match=r"'harbor' has 5 usable images .* 2 lora \+ 2 pool \+ 2 "
        r"test = 6",
    ):
        make_splits(records_of(root), SplitsConfig(lora=2, pool=2, test=2))


def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path, ucmerced) -> None:
    root = small_folder(ucmerced, tmp_path / "ds")
    victim = sorted((root / "forest").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:2000])
    with pytest.raises(DataError, match=f"(?s)1 unreadable image.*forest/{victim.name}"):
        records_of(root)


def test_truncated_jpeg_skipped_with_a_warning_when_asked(tmp_path, ucmerced, caplog) -> None:
    root = small_folder(ucmerced, tmp_path / "ds")
    victim = sorted((root / "forest").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:2000])
    with caplog.at_level(logging.WARNING):
        records = records_of(root, on_corrupt="skip")
    assert len(records) == 17 and victim.name not in {Path(r.ref).name for r in records}
    assert "skipping unreadable image" in caplog.text


def test_grayscale_and_odd_size_are_converted_and_logged(tmp_path, ucmerced, caplog) -> None:
    root = small_folder(ucmerced, tmp_path / "ds")
    victim = sorted((root / "beach").iterdir())[0]
    Image.open(victim).convert("L").resize((200, 180)).save(victim)
    with caplog.at_level(logging.WARNING):
        records_of(root)
    assert "converting to RGB: {'L': 1}" in caplog.text
    assert "1 image(s) are not 256x256" in caplog.text
    image = decode_image(victim.read_bytes(), 256)
    assert image.mode == "RGB" and image.size == (256, 256)


def test_exact_duplicates_are_left_out(tmp_path, ucmerced, caplog) -> None:
    root = small_folder(ucmerced, tmp_path / "ds")
    src = sorted((root / "beach").iterdir())[0]
    shutil.copy(src, root / "beach" / "copy.jpg")
    with caplog.at_level(logging.WARNING):
        records = records_of(root)
    assert len(records) == 18 and "1 exact duplicate" in caplog.text


def test_changed_image_is_detected_on_load(tmp_path, ucmerced) -> None:
    root = small_folder(ucmerced, tmp_path / "ds")
    cfg = DatasetConfig(path=str(root))
    record = scan_records(open_source(cfg), cfg)[0]
    other = sorted((root / "harbor").iterdir())[0]
    shutil.copy(other, root / record.ref)
    with pytest.raises(DataError, match="changed since the manifest"):
        ImageLoader(cfg)(record)


def test_hub_dataset_path_gives_the_same_records(tmp_path, ucmerced) -> None:
    """The paper's hub path (`datasets`), exercised on a saved dataset of real images."""
    import datasets

    root = small_folder(ucmerced, tmp_path / "ds")
    folder_records = records_of(root)
    files = sorted(root.glob("*/*.jpg"))
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)}
    )
    table = datasets.Dataset.from_dict(
        {"image": [str(f) for f in files], "label": [CLASSES.index(f.parent.name) for f in files]},
        features=features,
    )
    table = table.cast_column("image", datasets.Image(decode=False))
    table = table.map(
        lambda row: {"image": {"bytes": Path(row["image"]["path"]).read_bytes(), "path": None}}
    )
    table.save_to_disk(tmp_path / "hub")
    cfg = DatasetConfig(hub_id=str(tmp_path / "hub"))
    hub_records = scan_records(open_source(cfg), cfg)
    assert sorted((r.label, r.sha256) for r in hub_records) == sorted(
        (r.label, r.sha256) for r in folder_records
    )
    splits = SplitsConfig(lora=2, pool=2, test=2)
    by_hash = {r.sha256: r for r in hub_records}
    hub_manifest = make_splits(hub_records, splits)
    folder_manifest = make_splits(folder_records, splits)
    assert sorted((r.sha256, r.split) for r in hub_manifest.records) == sorted(
        (r.sha256, r.split) for r in folder_manifest.records
    )
    image = ImageLoader(cfg)(by_hash[hub_manifest.records[0].sha256])
    assert image.size == (256, 256)


def test_hub_dataset_missing_column(tmp_path) -> None:
    import datasets

    datasets.Dataset.from_dict({"img": [1], "label": [0]}).save_to_disk(tmp_path / "hub")
    with pytest.raises(DataError, match="no column 'image'"):
        open_source(DatasetConfig(hub_id=str(tmp_path / "hub")))


def test_read_manifest_round_trip(tmp_path, ucmerced) -> None:
    cfg = smoke_config(tmp_path)
    manifest = prepare_data(cfg)
    assert read_manifest(cfg.paths.manifest) == manifest
