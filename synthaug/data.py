"""Real images: read a dataset (local ImageFolder or Hugging Face), split it, write a manifest.

Every later stage reads images through the manifest, so each report can cite exactly
which images (path or hub row, class, sha256 of the bytes) it used.
"""

from __future__ import annotations

import io
import logging
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from synthaug.config import DatasetConfig, DataSource, SplitsConfig, StudyConfig, config_hash
from synthaug.io import read_csv, same_settings, sha256_bytes, write_csv, write_json
from synthaug.sources import load_hub_dataset, locate

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
SPLITS = ("lora", "pool", "test")
MANIFEST_FIELDS = ("ref", "label", "split", "sha256")


class DataError(ValueError):
    """Input data that cannot be used as asked; the message names the file or class."""


@dataclass(frozen=True)
class ImageRecord:
    """One real image: `ref` is a path relative to the dataset root, or a hub row index."""

    ref: str
    label: str
    sha256: str
    split: str = ""


@dataclass(frozen=True)
class Manifest:
    classes: list[str]
    records: list[ImageRecord]

    def split(self, name: str) -> list[ImageRecord]:
        return [r for r in self.records if r.split == name]

    def counts(self) -> dict[str, Counter[str]]:
        """Images per class in each split."""
        return {s: Counter(r.label for r in self.split(s)) for s in SPLITS}


class FolderSource:
    """`root/<class>/<image>`: class names are the folder names."""

    def __init__(self, root: Path, classes: list[str] | None) -> None:
        if not root.is_dir():
            raise DataError(
                f"dataset folder {root} does not exist; set dataset.path to an "
                "ImageFolder root (<root>/<class>/<image>)"
            )
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not found:
            raise DataError(f"dataset folder {root} has no class sub-folders (<root>/<class>/)")
        missing = sorted(set(classes or []) - set(found))
        if missing:
            raise DataError(f"classes {missing} are not folders of {root}; found: {found}")
        self.root = root
        self.classes = sorted(classes) if classes else found

    def scan(self) -> list[tuple[str, str, bytes]]:
        items = []
        for label in self.classes:
            files = sorted(
                p
                for p in (self.root / label).iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise DataError(
                    f"class folder {self.root / label} has no images "
                    f"({', '.join(sorted(IMAGE_SUFFIXES))}); add images or drop "
                    "the class with dataset.classes"
                )
            items += [(p.relative_to(self.root).as_posix(), label, p.read_bytes()) for p in files]
        return items

    def read_bytes(self, ref: str) -> bytes:
        return (self.root / ref).read_bytes()


class HubSource:
    """A Hugging Face `datasets` dataset: a hub id, or a folder written by `save_to_disk`."""

    def __init__(self, src: DataSource, classes: list[str] | None) -> None:
        # deferred: datasets is imported only for a hub or save_to_disk source
        import datasets

        dataset = load_hub_dataset(src)
        for column in (src.image_column, src.label_column):
            if column not in dataset.column_names:
                raise DataError(
                    f"dataset {src.hub_id} has no column {column!r}; its columns are "
                    f"{dataset.column_names} (set dataset.image_column/label_column)"
                )
        feature = dataset.features[src.label_column]
        names = getattr(feature, "names", None)
        labels = [names[i] if names else str(i) for i in dataset[src.label_column]]
        self.dataset = dataset.cast_column(src.image_column, datasets.Image(decode=False))
        self.image_column = src.image_column
        self.labels = labels
        self.fingerprint = getattr(dataset, "_fingerprint", None)
        available = sorted(set(labels))
        missing = sorted(set(classes or []) - set(available))
        if missing:
            raise DataError(f"classes {missing} are not in {src.hub_id}; found: {available}")
        self.classes = sorted(classes) if classes else available

    def read_bytes(self, ref: str) -> bytes:
        cell = self.dataset[int(ref)][self.image_column]
        return cell["bytes"] if cell.get("bytes") else Path(cell["path"]).read_bytes()

    def scan(self) -> list[tuple[str, str, bytes]]:
        wanted = set(self.classes)
        return [
            (str(i), label, self.read_bytes(str(i)))
            for i, label in enumerate(self.labels)
            if label in wanted
        ]


def open_source(src: DataSource, classes: list[str] | None = None) -> FolderSource | HubSource:
    """The images of `src` where `locate` finds them (a folder, or the hub), `classes` of
    them (default: the dataset's own `classes` for a `DatasetConfig`, else all)."""
    if classes is None and isinstance(src, DatasetConfig):
        classes = src.classes
    where = locate(src)
    if where.kind == "folder":
        return FolderSource(Path(where.where), classes)
    return HubSource(src, classes)


def source_record(source: FolderSource | HubSource, src: DataSource) -> dict[str, str | None]:
    """Which source was read, for the manifest and provenance: the folder, or the hub id
    with the revision asked for and the `datasets` fingerprint of what was read."""
    if isinstance(source, FolderSource):
        return {"kind": "folder", "folder": str(source.root), "local": src.local}
    return {
        "kind": "hub",
        "hub_id": src.hub_id,
        "revision": src.hub_revision,
        "fingerprint": source.fingerprint,
    }


def decode_image(data: bytes, size: int, name: str = "image") -> Image.Image:
    """Decode to RGB at `size` x `size`; grayscale/RGBA/palette images are converted and
    images of another size are resized (bicubic). Corrupt bytes raise `DataError`."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise DataError(
            f"{name}: cannot decode image ({error}); replace or remove the file, "
            "or set dataset.on_corrupt: skip"
        ) from None
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image


def scan_records(source: FolderSource | HubSource, cfg: DatasetConfig) -> list[ImageRecord]:
    """Hash and check every image once; log what is converted, resized or skipped."""
    records, corrupt, seen = [], [], set()
    odd_mode, odd_size, repeats = Counter(), 0, 0
    for ref, label, data in source.scan():
        digest = sha256_bytes(data)
        if digest in seen:  # the same bytes twice could land in both train and test
            repeats += 1
            continue
        seen.add(digest)
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                mode, shape = image.mode, image.size
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            corrupt.append(f"{ref} ({error})")
            continue
        odd_mode.update([mode] if mode != "RGB" else [])
        odd_size += shape != (cfg.image_size, cfg.image_size)
        records.append(ImageRecord(ref=ref, label=label, sha256=digest))
    if corrupt and cfg.on_corrupt == "error":
        shown = "\n  ".join(corrupt[:10])
        raise DataError(
            f"{len(corrupt)} unreadable image(s):\n  {shown}\nreplace or remove "
            "them, or set dataset.on_corrupt: skip to leave them out"
        )
    for item in corrupt:
        log.warning("skipping unreadable image %s", item)
    if odd_mode:
        log.warning("converting to RGB: %s", dict(odd_mode))
    if odd_size:
        log.warning(
            "%d image(s) are not %dx%d and will be resized",
            odd_size,
            cfg.image_size,
            cfg.image_size,
        )
    if repeats:
        log.warning("left out %d exact duplicate image(s) (same bytes as an earlier one)", repeats)
    return records


def spread(total: int, classes: list[str]) -> dict[str, int]:
    """Split `total` evenly over `classes`; the first `total % n` (alphabetical) get one more."""
    base, extra = divmod(total, len(classes))
    return {c: base + (i < extra) for i, c in enumerate(sorted(classes))}


def make_splits(records: list[ImageRecord], cfg: SplitsConfig) -> Manifest:
    """Seeded, class-stratified, disjoint lora/pool/test splits."""
    by_class: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_class[record.label].append(record)
    classes = sorted(by_class)
    if not classes:
        raise DataError("the dataset has no usable images")

    def per_class(count: int | None) -> dict[str, int | None]:
        if count is None:
            return dict.fromkeys(classes)
        return spread(count, classes) if cfg.unit == "total" else dict.fromkeys(classes, count)

    lora, pool, test = per_class(cfg.lora), per_class(cfg.pool), per_class(cfg.test)
    out: list[ImageRecord] = []
    for label in classes:
        items = sorted(by_class[label], key=lambda r: (r.sha256, r.ref))
        random.Random(f"{cfg.seed}/{label}").shuffle(items)
        need = lora[label] + test[label] + (pool[label] or 0)
        if len(items) < need:
            raise DataError(
                f"class {label!r} has {len(items)} usable images but the splits ask for "
                f"{lora[label]} lora + {pool[label] or 0} pool + {test[label]} test = {need}; "
                "lower splits.lora/pool/test or add images"
            )
        n_pool = pool[label] if pool[label] is not None else len(items) - lora[label] - test[label]
        bounds = {"test": (0, test[label])}
        bounds["lora"] = (test[label], test[label] + lora[label])
        bounds["pool"] = (bounds["lora"][1], bounds["lora"][1] + n_pool)
        for split in SPLITS:
            start, stop = bounds[split]
            out += [ImageRecord(r.ref, r.label, r.sha256, split) for r in items[start:stop]]
    order = {s: i for i, s in enumerate(SPLITS)}
    out.sort(key=lambda r: (order[r.split], r.label, r.ref))
    return Manifest(classes=classes, records=out)


def write_manifest(path: Path, manifest: Manifest) -> Path:
    rows = ((r.ref, r.label, r.split, r.sha256) for r in manifest.records)
    return write_csv(path, MANIFEST_FIELDS, rows)


def read_manifest(path: Path) -> Manifest:
    rows = read_csv(path)
    if rows and tuple(rows[0]) != MANIFEST_FIELDS:
        raise DataError(f"{path} is not a synthaug manifest (columns {MANIFEST_FIELDS})")
    records = [ImageRecord(r["ref"], r["label"], r["sha256"], r["split"]) for r in rows]
    return Manifest(classes=sorted({r.label for r in records}), records=records)


def prepare_data(cfg: StudyConfig, write: bool = True) -> Manifest:
    """Stage 0: scan the dataset, split it, write `<run>/data/manifest.csv` (reused if the
    dataset and split settings are unchanged; a different setting never overwrites it).
    `write=False` returns the manifest without writing anything (dry runs)."""
    path = cfg.paths.manifest
    settings = {
        "config_hash": config_hash(cfg.dataset, cfg.splits.model_dump(mode="json")),
        "dataset": cfg.dataset.model_dump(mode="json"),
        "splits": cfg.splits.model_dump(mode="json"),
    }
    if same_settings(cfg.paths.manifest_settings, settings, str(path)) and path.exists():
        return read_manifest(path)
    source = open_source(cfg.dataset)
    manifest = make_splits(scan_records(source, cfg.dataset), cfg.splits)
    if not write:
        return manifest
    write_json(
        cfg.paths.manifest_settings, {**settings, "source": source_record(source, cfg.dataset)}
    )
    write_manifest(path, manifest)
    return manifest


GENERATED = "generated"


def read_generated_manifest(path: Path) -> list[ImageRecord]:
    """Generated images as records (`file` relative to the arm's folder, `label`,
    `sha256`), their split the folder's name (`generated`, `generated-base`, ...), so they
    flow through the same code as real ones."""
    if not path.is_file():
        raise DataError(
            f"no generated images at {path.parent}: run the generate stage "
            "(notebooks/02_generate.ipynb or `synthaug run --stage generate`) first"
        )
    split = path.parent.name
    return [ImageRecord(r["file"], r["label"], r["sha256"], split) for r in read_csv(path)]


def is_generated(record: ImageRecord) -> bool:
    return record.split == GENERATED or record.split.startswith(f"{GENERATED}-")


class ImageLoader:
    """Loads manifest images (real, or generated: from `<run_dir>/<split>/`) as RGB images."""

    def __init__(self, cfg: DatasetConfig, run_dir: Path | None = None) -> None:
        self.source = open_source(cfg)
        self.run_dir = run_dir
        self.size = cfg.image_size

    def __call__(self, record: ImageRecord) -> Image.Image:
        if is_generated(record):
            if self.run_dir is None:
                raise DataError(f"{record.ref} is a generated image but no run folder was given")
            data = (self.run_dir / record.split / record.ref).read_bytes()
        else:
            data = self.source.read_bytes(record.ref)
        if record.sha256 and sha256_bytes(data) != record.sha256:
            raise DataError(
                f"{record.ref} changed since the manifest was written (sha256 "
                "differs); restore it or start a new study `name`"
            )
        return decode_image(data, self.size, record.ref)
