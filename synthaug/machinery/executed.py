"""An executed notebook as the run keeps it: every path that names this machine shortened.

papermill records the notebook's input and output paths and the injected parameters, and
libraries print file paths in warnings and tracebacks; `shorten_paths` passes each of
these, and every text output, through `paths.shown`, so the kept notebook and the book
built from it show no home folder, temporary folder or project path. Images are left as
they are (their base64 text is not a path).
"""

from __future__ import annotations

import json
from pathlib import Path

from synthaug.io import atomic_write_text
from synthaug.paths import shown


def shorten_paths(notebook: Path) -> None:
    """Rewrite `notebook` in place with its source, text outputs and metadata shortened."""
    data = json.loads(notebook.read_text())
    data["metadata"] = _shortened(data.get("metadata", {}))
    for cell in data["cells"]:
        cell["source"] = _shortened(cell["source"])
        for output in cell.get("outputs", []):
            _shorten_output(output)
    text = json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False)
    atomic_write_text(notebook, text + "\n")


def _shorten_output(output: dict) -> None:
    """A stream's text, an error's message and traceback, and every text-like display."""
    for key in ("text", "evalue", "traceback"):
        if key in output:
            output[key] = _shortened(output[key])
    for mime, value in output.get("data", {}).items():
        if mime.startswith("text/") or mime.endswith("json"):
            output["data"][mime] = _shortened(value)


def _shortened(value: object) -> object:
    """`shown` on every string inside `value` (a string, list or dict, nested)."""
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, list):
        return [_shortened(item) for item in value]
    if isinstance(value, dict):
        return {key: _shortened(item) for key, item in value.items()}
    return value
