"""Build the study's Jupyter Book (1.x, offline) from its executed notebooks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from synthaug.config import StudyConfig, project_root


def book_dir(cfg: StudyConfig) -> Path:
    return cfg.run_dir / "book"


def html_index(cfg: StudyConfig) -> Path:
    return book_dir(cfg) / "_build" / "html" / "index.html"


def _executed(cfg: StudyConfig) -> list[Path]:
    return sorted((cfg.run_dir / "notebooks").glob("[0-9]*.ipynb"))


def book_is_current(cfg: StudyConfig) -> bool:
    """The HTML exists and is newer than every executed notebook."""
    index = html_index(cfg)
    notebooks = _executed(cfg)
    return (
        index.exists()
        and bool(notebooks)
        and all(p.stat().st_mtime <= index.stat().st_mtime for p in notebooks)
    )


def table_of_contents(names: list[str]) -> dict:
    """04_analysis is the front page; then the LoRA, generation and every cell."""
    chapters = [{"file": n} for n in ("01_lora", "02_generate") if n in names]
    cells = [{"file": n} for n in names if n.startswith("03_train_ratio")]
    parts = [{"caption": "Stages", "chapters": chapters}] if chapters else []
    if cells:
        parts.append({"caption": "Classifier cells (mix, seed)", "chapters": cells})
    return {"format": "jb-book", "root": "04_analysis", "parts": parts}


def _retitle(path: Path, cell: str) -> None:
    """Give each classifier cell's page its own title (gen210-real840-seed0 -> ...)."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    first = notebook.cells[0]
    body = first.source.split("\n", 1)[1] if "\n" in first.source else ""
    title = (
        cell.replace("gen", "generated ").replace("-real", " : real ").replace("-seed", ", seed ")
    )
    first.source = f"# 03 · {title}\n{body}"
    nbformat.write(notebook, path)


def build_book(cfg: StudyConfig) -> Path:
    """Copy the executed notebooks beside the book config and run `jupyter-book build`."""
    notebooks = _executed(cfg)
    names = [p.stem for p in notebooks]
    if "04_analysis" not in names:
        raise FileNotFoundError(
            "the book needs the executed 04_analysis notebook; run the analysis stage first"
        )
    folder = book_dir(cfg)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy(project_root() / "book" / "_config.yml", folder / "_config.yml")
    for path in notebooks:
        shutil.copy(path, folder / path.name)
        if path.stem.startswith("03_train_ratio-"):
            _retitle(folder / path.name, path.stem.removeprefix("03_train_ratio-"))
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
    if result.returncode != 0 or not html_index(cfg).exists():
        raise RuntimeError(
            f"jupyter-book build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return html_index(cfg)
