"""Small file helpers: atomic writes (a kill never leaves a half-written file), JSON and CSV,
hashes, and the one guard that keeps a run folder's outputs from mixing two settings."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def write_json(
    path: str | os.PathLike[str], payload: Any, indent: int = 2, sort_keys: bool = True
) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=indent, sort_keys=sort_keys) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_csv(
    path: str | os.PathLike[str], header: Sequence[str], rows: Iterable[Sequence]
) -> Path:
    """A CSV file (header, then rows; `\\n` line ends), written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as dicts."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


class SettingsMismatch(RuntimeError):
    """A run folder already holds results made with other settings."""


def same_settings(path: str | os.PathLike[str], settings: dict[str, Any], holder: str) -> bool:
    """The one guard of every stage's outputs: True when the JSON file `path` records
    `settings` (each key equal), False when there is no such file yet; otherwise raise
    `SettingsMismatch` naming what differs: results are never silently overwritten."""
    path = Path(path)
    if not path.exists():
        return False
    recorded = read_json(path)
    changed = sorted(key for key in settings if recorded.get(key) != settings[key])
    if changed:
        raise SettingsMismatch(
            f"{holder} was made with other settings ({', '.join(changed)} differ; see {path}); "
            f"give the study a new `name`, or delete {holder} to make it again"
        )
    return True


def record_settings(path: str | os.PathLike[str], settings: dict[str, Any], holder: str) -> None:
    """`same_settings`, then the settings written if `path` held none yet: a stage that
    writes its outputs as it goes claims the folder before its first one."""
    if not same_settings(path, settings, holder):
        write_json(path, settings)


def safetensors_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a safetensors file's content: its metadata and every tensor (name, dtype,
    shape, bytes). Unlike the file's own hash it is the same in every process: safetensors
    writes its metadata map in hash order."""

    with safe_open(str(path), "pt") as handle:
        digest = hashlib.sha256(json.dumps(handle.metadata(), sort_keys=True).encode())
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name).contiguous()
            digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def build_once(target: Path, build) -> Path:
    """Run `build(tmp_dir)` and rename the result to `target`, unless `target` exists.

    The rename is atomic, so an interrupted build never leaves a folder that looks done.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
