"""What a finished run made, as one JSON: to show that a change of the code changed nothing.

    python bench/run_fingerprint.py RUN_DIR [--out F.json]      # fingerprint a run folder
    python bench/run_fingerprint.py --compare A.json B.json     # equal, or each difference

The fingerprint holds the LoRA's tensors (digest: safetensors headers may order their
metadata otherwise), the loss log, the manifests (the generated images' hashes among them),
every cell's metrics (timings aside), and the analysis's tables as the executed 04_analysis
notebook shows them. Two runs of the same settings on one machine give equal fingerprints.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from synthaug.io import safetensors_digest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _cells(run: Path) -> dict[str, dict]:
    cells = {}
    for metrics in sorted(run.glob("cells/*/metrics.json")):
        values = json.loads(metrics.read_text())
        values.pop("timings", None)
        cells[metrics.parent.name] = values
    return cells


def _tables(run: Path) -> list[str]:
    """The text/html or text/plain tables the executed analysis notebook shows."""
    notebook = run / "notebooks" / "04_analysis.ipynb"
    if not notebook.exists():
        return []
    shown = []
    for cell in json.loads(notebook.read_text())["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "text/html" in data and "<table" in "".join(data["text/html"]):
                shown.append("".join(data["text/html"]))
    return shown


def fingerprint(run: Path) -> dict[str, object]:
    """The run folder's outputs that a code change must leave alone."""
    tensors = sorted(run.glob("lora*/pytorch_lora_weights.safetensors"))
    files = sorted([*run.glob("lora*/loss.csv"), *run.glob("*/manifest.csv")])
    return {
        "tensors": {str(p.relative_to(run)): safetensors_digest(p) for p in tensors},
        "files": {str(p.relative_to(run)): _sha(p) for p in files},
        "cells": _cells(run),
        "tables": _tables(run),
    }


def differences(a: dict, b: dict, where: str = "") -> list[str]:
    """Each place where two fingerprints differ, as `path: a != b`."""
    if isinstance(a, dict) and isinstance(b, dict):
        lines = []
        for key in sorted(set(a) | set(b)):
            lines += differences(a.get(key), b.get(key), f"{where}/{key}")
        return lines
    return [] if a == b else [f"{where}: {str(a)[:80]} != {str(b)[:80]}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare", nargs=2, type=Path)
    args = parser.parse_args()
    if args.compare:
        first, second = (json.loads(p.read_text()) for p in args.compare)
        found = differences(first, second)
        print(
            "\n".join(found) or f"equal: {len(first['cells'])} cells, {len(first['files'])} files"
        )
        return 1 if found else 0
    text = json.dumps(fingerprint(args.run), indent=1, sort_keys=True)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
