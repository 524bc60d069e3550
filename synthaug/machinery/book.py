"""Build the study's Jupyter Book (1.x, offline) from its executed notebooks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

from synthaug.config import StudyConfig
from synthaug.io import read_json
from synthaug.paths import project_root, shown
from synthaug.runtime import provenance
from synthaug.runtime.progress import MARK


def _executed(cfg: StudyConfig) -> list[Path]:
    """The executed notebooks in reading order: by stage, the LoRA arm's before the others'."""
    return sorted(cfg.paths.notebooks.glob("[0-9]*.ipynb"), key=lambda p: _order(p.stem))


def _arm(stem: str) -> str:
    """The generation arm of an executed notebook (`02_generate-base`, `03_train_ratio-
    base-gen...`): `lora` when it names none."""
    rest = stem.split("-", 1)[1] if "-" in stem else ""
    first = rest.split("-", 1)[0]
    plain = not first or first.startswith(("gen", "shard")) or _generator_seed(first) is not None
    return "lora" if plain else first


def _generator_seed(part: str) -> int | None:
    """The seed of a name part `g2` (a generator seed's task or cell), else None."""
    return int(part[1:]) if part[:1] == "g" and part[1:].isdigit() else None


def _seed_of(stem: str) -> int:
    """The generator seed of an executed notebook (0 when it names none)."""
    seeds = [_generator_seed(part) for part in stem.split("-")]
    return next((seed for seed in seeds if seed is not None), 0)


def _order(stem: str) -> tuple:
    return stem[:2], _arm(stem) != "lora", stem


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
REPRODUCE_PAGE = "reproduce"


def table_of_contents(names: list[str]) -> dict:
    """04_analysis is the front page (the question, the answer, the tables and figures);
    then the LoRA and generation pages; then one page listing every classifier cell, whose
    pages sit under it (collapsed in the sidebar); last, how to reproduce each page."""
    chapters = [{"file": n} for n in names if n.startswith(("01_lora", "02_generate"))]
    cells = [{"file": n} for n in names if n.startswith("03_train_ratio")]
    if cells:
        chapters.append({"file": CELLS_PAGE, "sections": cells})
    parts = [{"caption": "How the study ran", "chapters": chapters}] if chapters else []
    parts.append({"caption": "Reproduce", "chapters": [{"file": REPRODUCE_PAGE}]})
    return {"format": "jb-book", "root": "04_analysis", "parts": parts}


def _headings(path: Path) -> list[str]:
    """The `## ` headings of a notebook's markdown: the tables and figures it shows."""
    # deferred: notebook machinery, imported only when notebooks run or the book is built
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    return [
        line[3:].strip()
        for cell in notebook.cells
        if cell.cell_type == "markdown"
        for line in cell.source.splitlines()
        if line.startswith("## ")
    ]


def reproduce_page(cfg: StudyConfig, notebooks: list[Path], stage_of: Mapping[str, str]) -> str:
    """The book's last page: per table and figure, the notebook that makes it and the
    command that redraws it from this run; then the package versions it ran with.
    `stage_of` maps each notebook to its stage (the cells' notebooks have their own row)."""

    config = shown(cfg.paths.config)
    run = f"synthaug run -f {config}"
    rows = []
    for path in notebooks:
        stage = stage_of.get(path.stem.split("-")[0])
        if stage in (None, "classify"):
            continue
        command = f"`{run} --stage {stage} --rebuild`"
        arm = _arm(path.stem)
        tag = "" if arm == "lora" else f" ({arm} arm)"
        rows += [f"| {item}{tag} | {path.stem} | {command} |" for item in _headings(path)]
    cell = (
        f"`papermill notebooks/03_train_ratio.ipynb out.ipynb -f {config} "
        "-p n_generated G -p n_real R -p seed S -p arm A`"
    )
    rows.append(f"| one classifier cell's curves and confusion | 03_train_ratio-... | {cell} |")
    rows.append(f"| this book, from the executed notebooks | | `{run} --stage book` |")
    lines = [
        "# Reproduce this report",
        "",
        f"`{config}` is this run's config with every default filled in: a profile of its "
        f"own. `{run}` finds every finished task done and runs only what is missing; with "
        "`--stage S --rebuild` it runs stage S's notebooks again, which find their work done "
        "and redraw their tables and figures from the run folder (then rebuild the book "
        f"with `{run}`). To run the whole study anew, give it another `name`.",
        "",
        "| table or figure | notebook | command |",
        "|---|---|---|",
        *rows,
        "",
    ]
    record = cfg.paths.provenance("04_analysis")
    if record.exists():
        env = read_json(record)
        lines += [
            "## Versions",
            "",
            f"The analysis ran with Python {env['python']} on {env['platform']}, CPU "
            f"{env.get('cpu', '?')} (torch kernels: {env.get('cpu_isa', '?')}, "
            f"{env.get('torch_threads', '?')} threads), code revision "
            f"`{env['code_revision']}`, GPU: {env['gpu'] or 'none'}. Float results of the "
            "generator differ in their last bits between CPU models, instruction sets and "
            "thread counts; the generator-seed intervals carry that uncertainty. Every "
            f"task's own record is in `{shown(record.parent)}/`.",
            "",
            "| package | version |",
            "|---|---|",
            *(f"| {name} | {version} |" for name, version in env["packages"].items()),
            "",
        ]
    return "\n".join(lines)


def cells_page(cfg: StudyConfig, names: list[str]) -> str:
    """The index of the classifier cells: one row per cell with its test accuracy."""

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


def page_title(stem: str) -> str | None:
    """A page's own title where the notebook's would repeat: each classifier cell
    (`03 · generated 210 : real 840, seed 0`), another arm's synthetic set (`02 · The
    synthetic set: base arm`); None keeps the notebook's."""
    seed = _seed_of(stem)
    of_seed = f", generator seed {seed}" if seed else ""
    if stem.startswith("03_train_ratio-"):
        return f"03 · {_title(stem.removeprefix('03_train_ratio-'))}"
    if stem.startswith("02_generate") and (_arm(stem) != "lora" or seed):
        return f"02 · The synthetic set: {_arm(stem)} arm{of_seed}"
    if stem.startswith("01_lora") and seed:
        return f"01 · The LoRA{of_seed}"
    return None


def _title(cell: str) -> str:
    """`gen210-real840-seed0` -> `generated 210 : real 840, seed 0`; another arm's cell
    `base-gen210-...` -> `base: generated 210 : ...`."""
    arm, _, rest = cell.rpartition("gen")
    title = f"generated {rest}".replace("-real", " : real ").replace("-seed", ", seed ")
    title = re.sub(r"-g(\d+),", r", generator seed \1,", title)
    return f"{arm.removesuffix('-')}: {title}" if arm else title


def tag_for_report(path: Path, title: str | None = None) -> None:
    """Hide the code in the report: every code cell's input is removed, and the parameter
    cells (the profile's and papermill's injected ones) entirely: each page names the
    command and config that made it instead; progress lines are left out (the executed
    notebooks keep them). `title` replaces the page's own (a classifier cell's, another
    arm's synthetic set)."""
    # deferred: notebook machinery, imported only when notebooks run or the book is built
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    if title is not None:
        first = notebook.cells[0]
        body = first.source.split("\n", 1)[1] if "\n" in first.source else ""
        first.source = f"# {title}\n{body}"
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        cell.outputs = [o for o in cell.outputs if o.get("metadata", {}) != MARK]
        tags = set(cell.metadata.get("tags", []))
        tags.add("remove-cell" if tags & {"parameters", "injected-parameters"} else "remove-input")
        cell.metadata["tags"] = sorted(tags)
    nbformat.write(notebook, path)


def _swap_in(built: Path, target: Path) -> None:
    """Put the folder `built` where `target` is, the old one removed after."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(built, target)
    shutil.rmtree(old, ignore_errors=True)


def build_book(cfg: StudyConfig, stage_of: Mapping[str, str]) -> Path:
    """Copy the executed notebooks beside the book config and run `jupyter-book build`."""
    notebooks = _executed(cfg)
    names = [p.stem for p in notebooks]
    if "04_analysis" not in names:
        raise FileNotFoundError(
            "the book needs the executed 04_analysis notebook; run the analysis stage first"
        )
    provenance.record(cfg, "book")
    # built beside, then swapped in: the book is whole or absent, never half-built
    folder = cfg.paths.book.with_name(f".{cfg.paths.book.name}.building")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copy(project_root() / "book" / "_config.yml", folder / "_config.yml")
    for path in notebooks:
        shutil.copy(path, folder / path.name)
        tag_for_report(folder / path.name, page_title(path.stem))
    cells = [n for n in names if n.startswith("03_train_ratio-")]
    if cells:
        (folder / f"{CELLS_PAGE}.md").write_text(cells_page(cfg, cells))
    (folder / f"{REPRODUCE_PAGE}.md").write_text(reproduce_page(cfg, notebooks, stage_of))
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
    if result.returncode != 0 or not (folder / "_build" / "html" / "index.html").exists():
        raise RuntimeError(
            f"jupyter-book build failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    _swap_in(folder, cfg.paths.book)
    return cfg.paths.book_index
