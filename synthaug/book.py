"""Build the study's Jupyter Book (1.x, offline) from its executed notebooks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from synthaug.config import StudyConfig, project_root
from synthaug.progress import MARK


def _executed(cfg: StudyConfig) -> list[Path]:
    return sorted(cfg.paths.notebooks.glob("[0-9]*.ipynb"))


def book_is_current(cfg: StudyConfig) -> bool:
    """The HTML exists and is newer than every executed notebook."""
    index = cfg.paths.book_index
    notebooks = _executed(cfg)
    return (
        index.exists()
        and bool(notebooks)
        and all(p.stat().st_mtime <= index.stat().st_mtime for p in notebooks)
    )


CELLS_PAGE = "classifier_cells"


def table_of_contents(names: list[str]) -> dict:
    """04_analysis is the front page (the question, the answer, the tables and figures);
    then the LoRA and generation pages; then one page listing every classifier cell, whose
    pages sit under it (collapsed in the sidebar)."""
    chapters = [{"file": n} for n in names if n == "01_lora" or n.startswith("02_generate")]
    cells = [{"file": n} for n in names if n.startswith("03_train_ratio")]
    if cells:
        chapters.append({"file": CELLS_PAGE, "sections": cells})
    parts = [{"caption": "How the study ran", "chapters": chapters}] if chapters else []
    return {"format": "jb-book", "root": "04_analysis", "parts": parts}


def cells_page(cfg: StudyConfig, names: list[str]) -> str:
    """The index of the classifier cells: one row per cell with its test accuracy."""
    from synthaug.io import read_json

    rows = []
    for name in names:
        cell = name.removeprefix("03_train_ratio-")
        metrics_path = cfg.paths.cell_metrics(cell)
        accuracy = read_json(metrics_path)["accuracy"] if metrics_path.exists() else None
        shown = f"{accuracy:.3f}" if accuracy is not None else "not run"
        rows.append(f"| [{_title(cell)}]({name}.ipynb) | {shown} |")
    return "\n".join(
        [
            "# Classifier cells",
            "",
            "One classifier per training set (generated : real images) and seed, each tested "
            "on the same real test images. Each page holds its per-epoch curves and its "
            "confusion matrix.",
            "",
            "| cell | test accuracy |",
            "|---|---|",
            *rows,
            "",
        ]
    )


def _title(cell: str) -> str:
    """`gen210-real840-seed0` -> `generated 210 : real 840, seed 0`."""
    return (
        cell.replace("gen", "generated ").replace("-real", " : real ").replace("-seed", ", seed ")
    )


def tag_for_report(path: Path, cell_name: str | None = None) -> None:
    """Hide the code in the report: every code cell's input is removed, except the
    parameters (the profile's and papermill's injected ones), which stay behind a toggle;
    progress lines are left out (the executed notebooks keep them). A classifier cell's
    page gets its own title (gen210-real840-seed0 -> generated 210 : real 840, seed 0)."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    if cell_name is not None:
        first = notebook.cells[0]
        body = first.source.split("\n", 1)[1] if "\n" in first.source else ""
        first.source = f"# 03 · {_title(cell_name)}\n{body}"
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if o.get("metadata", {}) != MARK]
        tags = set(cell.metadata.get("tags", []))
        tags.add("hide-input" if tags & {"parameters", "injected-parameters"} else "remove-input")
        cell.metadata["tags"] = sorted(tags)
    nbformat.write(notebook, path)


def build_book(cfg: StudyConfig) -> Path:
    """Copy the executed notebooks beside the book config and run `jupyter-book build`."""
    notebooks = _executed(cfg)
    names = [p.stem for p in notebooks]
    if "04_analysis" not in names:
        raise FileNotFoundError(
            "the book needs the executed 04_analysis notebook; run the analysis stage first"
        )
    folder = cfg.paths.book
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy(project_root() / "book" / "_config.yml", folder / "_config.yml")
    for path in notebooks:
        shutil.copy(path, folder / path.name)
        cell = path.stem.removeprefix("03_train_ratio-")
        tag_for_report(folder / path.name, cell if cell != path.stem else None)
    cells = [n for n in names if n.startswith("03_train_ratio-")]
    if cells:
        (folder / f"{CELLS_PAGE}.md").write_text(cells_page(cfg, cells))
    (folder / "_toc.yml").write_text(yaml.safe_dump(table_of_contents(names), sort_keys=False))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from jupyter_book.cli.main import main; main()",
            "build",
            str(folder),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not cfg.paths.book_index.exists():
        raise RuntimeError(
            f"jupyter-book build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return cfg.paths.book_index
