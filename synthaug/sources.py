"""Where data and models come from: a local copy when there is one, else the hub.

A profile names each dataset twice (`synthaug.config.DataSource`): the folder of a local
copy under one data root, and its hub id. `locate` picks, in order, an explicit
`path`, the local copy `$SYNTHAUG_DATA/<local>` (default root: `../shared/data` beside
the project, where that exists), then the hub. Everything that would fail only after
a download or hours of compute (offline with no copy, a hub id that does not exist, a
gated model without a token) fails here first, with one message that names the fix.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)
from PIL import Image

from synthaug.config import DataSource
from synthaug.paths import project_root, resolve_path

DATA_ENV = "SYNTHAUG_DATA"
# The checkout synthaug is installed from (`pip install -e .`): the models it ships lie
# under its `models/` folder.
CHECKOUT = Path(__file__).resolve().parents[1]


class SourceError(ValueError):
    """Data or a model that cannot be had as the profile names it; the message says how."""


def data_root() -> Path | None:
    """The root of local dataset copies: `$SYNTHAUG_DATA`, else `../shared/data` beside
    the project when that folder exists, else None (every dataset then comes from the hub)."""
    if env := os.environ.get(DATA_ENV):
        return Path(env).expanduser().resolve()
    beside = project_root().parent / "shared" / "data"
    return beside if beside.is_dir() else None


@dataclass(frozen=True)
class Located:
    """The source `locate` chose: an ImageFolder (`kind` folder) or a hub dataset."""

    kind: str  # "folder" or "hub"
    where: str  # the folder, or the hub id / save_to_disk folder
    revision: str | None = None

    def describe(self) -> str:
        if self.kind == "folder":
            return f"local folder {self.where}"
        return f"hub dataset {self.where}" + (f"@{self.revision}" if self.revision else "")


def locate(src: DataSource) -> Located:
    """The source to read: `path`, else the local copy, else the hub (see module doc)."""
    if src.path is not None:
        return Located("folder", str(resolve_path(src.path)))
    root = data_root()
    if src.local is not None and root is not None and (root / src.local).is_dir():
        return Located("folder", str(root / src.local))
    if src.hub_id is not None:
        return Located("hub", src.hub_id, src.hub_revision)
    raise SourceError(f"no copy of {src.local!r}: {_looked_in(src)}; {_how_to_provide(src)}")


def _looked_in(src: DataSource) -> str:
    root = data_root()
    if root is None:
        return f"{DATA_ENV} is not set and there is no ../shared/data beside the project"
    return f"{root / str(src.local)} does not exist ({DATA_ENV}={os.environ.get(DATA_ENV, '')!r})"


def _how_to_provide(src: DataSource) -> str:
    ways = []
    if src.hub_id:
        size = f" ({src.download_size})" if src.download_size else ""
        ways.append(f"connect to the internet to download {src.hub_id} once{size}")
    if src.local:
        ways.append(f"put an ImageFolder copy at $SYNTHAUG_DATA/{src.local}/<class>/<image>")
    ways.append("or set the profile's path to an ImageFolder (-p dataset.path DIR)")
    return "; ".join(ways)


def hub_offline() -> bool:

    return bool(constants.HF_HUB_OFFLINE)


def load_hub_dataset(src: DataSource) -> Any:
    """The split as a `datasets.Dataset`: from a `save_to_disk` folder, or from the hub
    (downloaded once, with `datasets`' progress bars, into its cache). Offline with nothing
    cached, an unknown id or a gated one: a `SourceError` that says what to do."""
    # deferred: datasets is imported only for a hub or save_to_disk source
    import datasets

    assert src.hub_id is not None
    folder = resolve_path(src.hub_id)
    if folder.is_dir():
        dataset = datasets.load_from_disk(str(folder))
        return dataset[src.hub_split] if isinstance(dataset, datasets.DatasetDict) else dataset
    try:
        return datasets.load_dataset(src.hub_id, split=src.hub_split, revision=src.hub_revision)
    except datasets.exceptions.DatasetNotFoundError as error:
        raise SourceError(
            f"hub dataset {src.hub_id}: {error}. Check the id; a gated or private dataset "
            "needs a token (`hf auth login`, or HF_TOKEN)"
        ) from None
    except (ConnectionError, OSError) as error:
        reason = "HF_HUB_OFFLINE is set" if hub_offline() else f"{type(error).__name__}"
        raise SourceError(
            f"hub dataset {src.hub_id} cannot be reached ({reason}) and no local copy was "
            f"found ({_looked_in(src) if src.local else 'no local copy is named'}); "
            f"{_how_to_provide(src)}"
        ) from None


def local_model(name: str) -> Path | None:
    """The folder a model's name means, or None for a hub id. A name is read as a path
    first as the profile's other paths are (absolute, or relative to the project root),
    then relative to synthaug's checkout, where the models it ships lie: so
    `models/tiny-flux1-aid` finds the shipped base from a profile saved anywhere, run from
    any folder."""
    for folder in (resolve_path(name), CHECKOUT / name):
        if folder.is_dir():
            return folder
    return None


def check_model(repo: str, what: str, config_file: str) -> Path:
    """Before any compute: `repo` is a local folder, or its `config_file` can be had from
    the hub (cached, or downloaded: a few KB); the file's local path. Otherwise a
    `SourceError` naming the model and the fix: offline, no such repo, or gated without a
    token."""
    if folder := local_model(repo):
        return folder / config_file

    try:
        return Path(huggingface_hub.hf_hub_download(repo, config_file))
    except GatedRepoError:
        raise SourceError(
            f"{what} {repo} is gated: accept its licence on https://huggingface.co/{repo}, "
            "then log in (`hf auth login`) or set HF_TOKEN"
        ) from None
    except RepositoryNotFoundError:
        raise SourceError(
            f"{what} {repo} is not on the hub (or is private: log in with `hf auth login`); "
            "check the id"
        ) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        reason = "HF_HUB_OFFLINE is set" if hub_offline() else type(error).__name__
        raise SourceError(
            f"{what} {repo} is not in the local hub cache and the hub cannot be reached "
            f"({reason}); connect once to download it, or give a local folder"
        ) from None


def materialize(src: DataSource, dest: Path, per_class: int | None = None) -> Path:
    """The hub dataset as an ImageFolder `dest/<class>/<row>.<ext>`, at most `per_class`
    images a class, streamed (the download stops once every class has its images). For
    the test suite on a machine with no local copy; done once (`dest/.complete`)."""

    # deferred: datasets is imported only for a hub or save_to_disk source
    import datasets

    if (dest / ".complete").exists():
        return dest
    stream = _stream(src).cast_column(src.image_column, datasets.Image(decode=False))
    names = stream.features[src.label_column].names
    counts = dict.fromkeys(names, 0)
    for row, item in enumerate(stream):
        label = names[item[src.label_column]]
        if per_class is not None and counts[label] >= per_class:
            if all(n >= per_class for n in counts.values()):
                break
            continue
        cell = item[src.image_column]
        data = cell["bytes"] or Path(cell["path"]).read_bytes()
        suffix = Image.open(io.BytesIO(data)).format.lower().replace("jpeg", "jpg")
        (dest / label).mkdir(parents=True, exist_ok=True)
        (dest / label / f"{row:06d}.{suffix}").write_bytes(data)
        counts[label] += 1
    (dest / ".complete").write_text(f"{src.hub_id}\n")
    return dest


def _stream(src: DataSource) -> Any:
    """The split as an `IterableDataset` (a `save_to_disk` folder, or the hub, streamed)."""
    # deferred: datasets is imported only for a hub or save_to_disk source
    import datasets

    assert src.hub_id is not None
    if resolve_path(src.hub_id).is_dir():
        return load_hub_dataset(src).to_iterable_dataset()
    try:
        return datasets.load_dataset(
            src.hub_id, split=src.hub_split, revision=src.hub_revision, streaming=True
        )
    except (ConnectionError, OSError) as error:
        raise SourceError(f"hub dataset {src.hub_id} cannot be streamed: {error}") from None
