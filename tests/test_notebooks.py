"""The notebooks run under papermill with a profile, exactly as the README says."""

import inspect
import json
import re

import nbformat
import papermill
import pytest
import yaml

from .conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_clean_with_a_parameters_cell(path) -> None:
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert any("parameters" in c.metadata.get("tags", []) for c in code)
    assert all(not c.outputs and c.execution_count is None for c in code)


def test_each_table_and_figure_of_the_analysis_page_is_one_call_in_its_own_cell() -> None:
    """Adding a table or figure to the report is one function (in `analysis.page` or
    `analysis.figures`) and one cell of 04: every cell after the set-up calls exactly one
    of them on the study, and every one of them has its cell."""
    from synthaug.analysis import figures, page

    notebook = nbformat.read(ROOT / "notebooks/04_analysis.ipynb", as_version=4)
    sources = [c.source for c in notebook.cells if c.cell_type == "code"]
    shown = r"(?:fig = )?(page|figures)\.(\w+)\(study\)(?:  #.*)?"
    calls = [re.fullmatch(shown, source) for source in sources[2:]]  # after parameters, set-up
    assert all(calls), [s for s, m in zip(sources[2:], calls, strict=True) if not m]
    public = {
        (module.__name__.rsplit(".", 1)[1], name)
        for module in (page, figures)
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__ and name[0] != "_"
    }
    assert public - {(m[1], m[2]) for m in calls} == {("page", "open_study"), ("page", "answer")}
    assert "page.answer(study)" in sources[1]


def run_notebook(name: str, tmp_path, **parameters) -> list[dict]:
    """Execute a notebook on the smoke profile (as `papermill -f params/smoke.yaml` does),
    writing under `tmp_path`; return its image outputs."""
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        ROOT / "notebooks" / f"{name}.ipynb",
        out,
        cwd=ROOT,
        parameters={
            **yaml.safe_load((ROOT / "params/smoke.yaml").read_text()),
            "output_dir": str(tmp_path),
            **parameters,
        },
        progress_bar=False,
    )
    executed = nbformat.read(out, as_version=4)
    return [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if any(key.startswith("image/") for key in o.get("data", {}))
    ]


def test_03_train_ratio_on_smoke_profile(tmp_path, ucmerced) -> None:
    images = run_notebook("03_train_ratio", tmp_path, n_generated=0, seed=1)
    metrics = json.loads((tmp_path / "smoke/cells/gen0-real20-seed1/metrics.json").read_text())
    assert metrics["cell"]["n_real"] == 20
    assert len(images) == 2  # per-epoch curves and the confusion matrix
    assert not [t for t in _texts(tmp_path / "out.ipynb") if "LOAD REPORT" in t]


def _texts(path) -> list[str]:
    """Every text output of an executed notebook (streams and plain-text displays)."""
    notebook = nbformat.read(path, as_version=4)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    return [o.get("text") or o.get("data", {}).get("text/plain", "") for o in outputs]


def test_01_lora_on_smoke_profile(tmp_path, ucmerced) -> None:
    images = run_notebook("01_lora", tmp_path)
    assert (tmp_path / "smoke/lora/pytorch_lora_weights.safetensors").is_file()
    assert len(images) == 3  # the loss curve and one sample grid per epoch (2 epochs)
    texts = _texts(tmp_path / "out.ipynb")
    # the LoRA's progress is one display updated in place: its final state alone is saved
    progress = [t for t in texts if t.startswith("LoRA: ") and " steps (" in t]
    assert len(progress) == 1 and progress[0].startswith("LoRA: 20/20 steps (100%)")
    assert not any("\r" in t for t in texts)  # no carriage-return refreshes
    # expected library messages are silenced where they arise
    noise = ("IProgress not found", "requires torchvision", "No LoRA keys", "LOAD REPORT")
    assert not [t for t in texts if any(n in t for n in noise)]


def test_02_generate_on_smoke_profile(tmp_path, ucmerced) -> None:
    run_notebook("01_lora", tmp_path)
    images = run_notebook("02_generate", tmp_path)
    generated = tmp_path / "smoke" / "generated"
    assert len(list(generated.glob("*/*.png"))) == 20
    assert (generated / "manifest.csv").is_file() and (generated / "figure1.png").is_file()
    assert len(images) == 1  # Figure 1
    stamps = {p: p.stat().st_mtime_ns for p in generated.glob("*/*.png")}
    run_notebook("02_generate", tmp_path)  # a rerun generates nothing new
    assert {p: p.stat().st_mtime_ns for p in generated.glob("*/*.png")} == stamps
