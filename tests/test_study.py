"""The whole smoke study through papermill, its resume, its failures, and the book."""

import json
import re
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthaug.analysis.answer import conclusion
from synthaug.config import load_config, read_yaml
from synthaug.data import DataError
from synthaug.io import read_csv
from synthaug.machinery.book import table_of_contents
from synthaug.machinery.study import (
    StudyError,
    Task,
    _threads_per_kernel,
    execute,
    list_tasks,
    run_study,
)
from synthaug.paths import shown

from .conftest import ROOT, SMALL_SMOKE, cell_results, smoke_config


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory, ucmerced):
    """The whole smoke study, run once for the tests of this module that only read it."""
    out = tmp_path_factory.mktemp("study")
    lines: list[str] = []
    todo = run_study(ROOT / "params/smoke.yaml", {"output_dir": str(out)}, echo=lines.append)
    return out, todo, lines


def test_smoke_study_end_to_end_then_rerun_does_nothing(smoke_study) -> None:
    tmp_path, todo, lines = smoke_study
    overrides = {"output_dir": str(tmp_path)}
    cfg = smoke_config(tmp_path)
    # LoRA, a synthetic set per arm (lora, base, img2img, filtered), 56 cells (3 mixes +
    # CAS per arm, 4 real-only baselines, the sweep's 2 new real counts per arm; x 2
    # seeds), analysis, book
    assert len(todo) == len(list_tasks(cfg)) == 1 + 4 + 56 + 2
    executed = sorted(p.stem for p in (cfg.run_dir / "notebooks").glob("*.ipynb"))
    assert executed[:2] == ["01_lora", "02_generate"] and "04_analysis" in executed
    assert {"02_generate-base", "02_generate-img2img", "02_generate-filtered"} <= set(executed)
    assert {"03_train_ratio-gen5-real15-seed1", "03_train_ratio-base-gen15-real0-seed0"} <= set(
        executed
    )
    assert "03_train_ratio-img2img-gen10-real20-seed1" in executed  # the sweep, 4 real/class
    assert any(line.startswith("[63/63] book") for line in lines)
    # the run records what made it: a config that loads as a profile, versions per task
    assert load_config(cfg.paths.config) == cfg
    record = json.loads(cfg.paths.provenance("01_lora").read_text())
    torch_version = metadata.version("torch")  # read as provenance reads it (no +cu130 suffix)
    assert record["packages"]["torch"] == torch_version and record["config"]["name"] == "smoke"
    assert record["data"]["kind"] == "folder" and record["data"]["local"] == "ucmerced"
    assert cfg.paths.provenance("03_train_ratio-base-gen15-real0-seed1").is_file()
    # the end of the run: the report's path and the answer
    assert f"report: {cfg.paths.book_index}" in lines
    assert any(line.strip().startswith("best mix, ") for line in lines)
    assert any(line.strip().startswith("generated only (CAS), 15 images: ") for line in lines)

    html = (cfg.paths.book_index.parent / "04_analysis.html").read_text()
    assert "Table 2" in html and "Table 1" in html
    assert len(re.findall(r"<img ", html)) >= 5  # Figure 1, 2-4, share, per class, quality
    table2 = html[html.index("accuracy [95% CI]") :]
    table2 = table2[: table2.index("</table>")]
    assert len(re.findall(r"<tr>\s*<th>\d+ : \d+</th>", table2)) == 3  # the smoke profile's 3 mixes
    assert "cfg = config.from_notebook" not in html  # the report shows no code

    again: list[str] = []
    assert run_study(ROOT / "params/smoke.yaml", overrides, echo=again.append) == []
    assert again[0].endswith(f"63 tasks, 63 done, 0 to run -> {cfg.run_dir}")

    # The cells ran in warm kernels; a fresh kernel (same threads) gives the same results.
    task = next(t for t in list_tasks(cfg) if t.name == "03_train_ratio-gen5-real15-seed1")
    metrics_path = cfg.run_dir / "cells" / "gen5-real15-seed1" / "metrics.json"
    warm = json.loads(metrics_path.read_text())
    metrics_path.unlink()
    with _threads_per_kernel(cfg.study.workers):
        execute(task, cfg, _smoke_sections(tmp_path))
    fresh = json.loads(metrics_path.read_text())
    assert fresh.pop("timings") and warm.pop("timings")
    assert fresh == warm


def test_klein_smoke_study_runs_end_to_end_and_names_its_models(tmp_path, ucmerced) -> None:
    """params/smoke-flux2-klein.yaml: the FLUX.2 [klein] family through every stage, its
    family and the backbone named in Table 1, the manifests, provenance and front page."""
    lines: list[str] = []
    profile = ROOT / "params/smoke-flux2-klein.yaml"
    todo = run_study(profile, {"output_dir": str(tmp_path)}, echo=lines.append)
    cfg = smoke_config(tmp_path, "smoke-flux2-klein")
    assert len(todo) == len(list_tasks(cfg)) and f"report: {cfg.paths.book_index}" in lines
    for arm in ("lora", "base"):
        rows = read_csv(cfg.paths.arm_manifest(arm))
        assert len(rows) == 20 and {r["family"] for r in rows} == {"flux2-klein"}
    record = json.loads(cfg.paths.provenance("01_lora").read_text())
    assert record["models"] == {
        "generator_family": "flux2-klein",
        "generator": "tiny",
        "classifier_backbone": "tiny",
    }
    html = (cfg.paths.book_index.parent / "04_analysis.html").read_text()
    assert "FLUX.2 [klein] (Flux2KleinPipeline)" in html  # Table 1
    front = re.sub(r"<[^>]+>", "", html)  # the text as a reader sees it
    assert "Generator: FLUX.2 [klein] (Flux2KleinPipeline), base tiny" in front
    assert "Classifier: tiny (transformers, linear probe)" in front
    assert "Show code cell source" not in html  # no parameter toggles on the front page
    page = re.sub(r"<[^>]+>", "", (cfg.paths.book_index.parent / "02_generate.html").read_text())
    assert f"-f {shown(cfg.paths.config)} --stage generate --rebuild" in page  # its profile
    assert "'dir':" not in page and "generated_now" in page  # a table, not a raw dict
    assert f"{cfg.run_dir}/generated" not in page  # paths relative to the run folder


def _shown_text(path: Path) -> str:
    """A kept notebook's or a built page's text, a notebook's images left out."""
    if path.suffix != ".ipynb":
        return path.read_text()
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            output["data"] = {k: v for k, v in data.items() if not k.startswith("image/")}
    return json.dumps(notebook)


def test_no_kept_notebook_or_page_names_a_machine_folder(smoke_study) -> None:
    """The home folder, the run's absolute path and the temporary folder (where this run
    lives) appear in no executed notebook and no page of the book."""
    cfg = smoke_config(smoke_study[0])
    folders = [f"{Path.home()}/", str(cfg.run_dir), f"{tempfile.gettempdir()}/"]
    pages = [*cfg.paths.notebooks.glob("*.ipynb"), *cfg.paths.book_index.parent.glob("*.html")]
    assert len(pages) > 120  # 63 notebooks, 63 pages and the book's own
    found = {f"{p.name}: {f}" for p in pages for f in folders if f in _shown_text(p)}
    assert not found, sorted(found)[:10]


def test_rebuild_redraws_one_stage_from_the_finished_run(smoke_study) -> None:
    """`--stage analysis --rebuild`: only 04_analysis runs again, from the run's cells; the
    book's last page names that command for each table and figure."""
    tmp_path = smoke_study[0]
    cfg = smoke_config(tmp_path)
    page = (cfg.paths.book / "reproduce.md").read_text()
    config = shown(cfg.paths.config)  # `$TMPDIR/...`: the page names no machine folder
    command = f"synthaug run -f {config} --stage analysis --rebuild"
    assert f"| Table 2 · Accuracy and mse per mix | 04_analysis | `{command}` |" in page
    assert "| torch | " + metadata.version("torch") + " |" in page
    before = cfg.paths.executed("04_analysis").stat().st_mtime
    cells_before = {p: p.stat().st_mtime for p in cfg.paths.cells.glob("*/metrics.json")}
    redone = run_study(config, stage="analysis", rebuild=True, echo=lambda _line: None)
    assert [t.name for t in redone] == ["04_analysis"]
    assert cfg.paths.executed("04_analysis").stat().st_mtime > before
    assert {p: p.stat().st_mtime for p in cells_before} == cells_before  # nothing retrained
    with pytest.raises(ValueError, match="rebuild needs a stage"):
        run_study(cfg.paths.config, rebuild=True, echo=lambda _line: None)


def test_report_in_a_browser_shows_table2_and_every_figure(smoke_study, tmp_path) -> None:
    """The built book opened in headless Chromium, as its reader opens it."""
    import shutil

    from synthaug.machinery.browser import check_page, find_chromium

    if find_chromium() is None:
        pytest.skip("no Chromium here (Debian: apt-get install chromium): browser check skipped")
    html_dir = smoke_config(smoke_study[0]).paths.book_index.parent
    page = check_page(html_dir, "04_analysis.html")
    assert page["title"].startswith("Can LoRA-generated aerial images replace real ones?")
    assert "Table 2" in page["text"]
    table2 = next(t for t in page["tables"] if "accuracy [95% CI]" in t)
    assert "10 : 10" in table2 and "0.943" in table2  # a mix beside the paper's 50% value
    assert len(page["images"]) >= 5 and all(image["ok"] for image in page["images"])
    cells = check_page(html_dir, "classifier_cells.html")
    assert cells["title"].startswith("Classifier cells")
    assert "generated 5 : real 15, seed 1" in cells["text"]
    # the check sees a broken figure: the same page with one image file gone
    broken = tmp_path / "html"
    shutil.copytree(html_dir, broken)
    (broken / page["images"][0]["src"]).unlink()
    assert not check_page(broken, "04_analysis.html")["images"][0]["ok"]


def test_two_generation_workers_write_the_manifest_one_writes(smoke_study, tmp_path) -> None:
    """`study.devices: 2`: one generation shard per device (on a CPU, per process), run at
    once; their merged manifest is byte for byte the single process's."""
    import shutil

    # the single process's LoRA (with two devices, two processes would train their own)
    single = smoke_config(smoke_study[0]).run_dir
    for part in ("data", "lora", "notebooks/01_lora.ipynb"):
        copy = shutil.copytree if (single / part).is_dir() else shutil.copy
        (tmp_path / "smoke" / part).parent.mkdir(parents=True, exist_ok=True)
        copy(single / part, tmp_path / "smoke" / part)
    lines: list[str] = []
    overrides = {"output_dir": str(tmp_path), "study.devices": "2"}
    done = run_study(ROOT / "params/smoke.yaml", overrides, stage="generate", echo=lines.append)
    assert [t.name for t in done] == [
        f"02_generate{arm}-shard{i}of2"
        for arm in ("", "-base", "-img2img", "-filtered")
        for i in (0, 1)
    ]
    two, one = smoke_config(tmp_path).paths, smoke_config(smoke_study[0]).paths
    for arm in ("lora", "base"):
        assert two.arm_manifest(arm).read_bytes() == one.arm_manifest(arm).read_bytes(), arm
    # img2img encodes its start images with the VAE, whose float sums depend on the thread
    # count (each of the two workers runs on one thread, the single process on two): the
    # same images to one grey level (measured: 2 pixels of 1 image of 20 differ by 1)
    files = [row["file"] for row in read_csv(one.arm_manifest("img2img"))]
    assert files == [row["file"] for row in read_csv(two.arm_manifest("img2img"))]
    for name in files:
        a, b = (np.asarray(Image.open(p.arm("img2img") / name), float) for p in (one, two))
        assert np.abs(a - b).max() <= 1, name
    # the filter keeps the same images (its scorer's sums, too, follow the thread count)
    kept = [[row["sha256"] for row in read_csv(p.arm_manifest("filtered"))] for p in (one, two)]
    assert kept[0] == kept[1]


def test_dry_run_lists_the_plan_without_running(tmp_path) -> None:
    lines: list[str] = []
    run_study(
        ROOT / "params/smoke.yaml",
        {"output_dir": str(tmp_path)},
        stage="classify",
        dry_run=True,
        echo=lines.append,
    )
    assert lines[0].endswith("61 tasks, 0 done, 61 to run -> " + str(tmp_path / "smoke"))
    assert lines[1].startswith("data: local folder ") and "5 classes, 80 images" in lines[1]
    assert "'agricultural'" in lines[3] and "-> 'an aerial image of agricultural'" in lines[3]
    tasks = [line for line in lines if "[todo]" in line or "[done]" in line]
    assert "[todo] lora" in tasks[0] and not (tmp_path / "smoke").exists()


def _smoke_sections(output_dir) -> dict:
    """The smoke profile's sections as `synthaug run` hands them to papermill."""
    return {**read_yaml(ROOT / "params/smoke.yaml"), "output_dir": str(output_dir)}


def test_failing_notebook_names_notebook_and_cell(tmp_path, ucmerced) -> None:
    cfg = smoke_config(tmp_path)
    sections = _smoke_sections(tmp_path)
    task = Task(
        "classify",
        "03_train_ratio-bad",
        "03_train_ratio",
        {"n_generated": 999, "n_real": None, "seed": 0},
    )
    with pytest.raises(
        StudyError,
        match=r"03_train_ratio.ipynb \(03_train_ratio-bad\) failed "
        r"in cell \d+: DataError: n_generated=999",
    ):
        execute(task, cfg, sections)
    assert not (cfg.run_dir / "notebooks" / "03_train_ratio-bad.ipynb").exists()


def test_book_toc_puts_the_analysis_first() -> None:
    toc = table_of_contents(
        ["01_lora", "02_generate", "03_train_ratio-gen0-real5-seed0", "04_analysis"]
    )
    assert toc["root"] == "04_analysis"
    chapters = toc["parts"][0]["chapters"]
    assert [c["file"] for c in chapters] == ["01_lora", "02_generate", "classifier_cells"]
    assert chapters[2]["sections"] == [{"file": "03_train_ratio-gen0-real5-seed0"}]
    assert toc["parts"][-1] == {"caption": "Reproduce", "chapters": [{"file": "reproduce"}]}


def test_other_arms_pages_follow_the_loras_under_their_own_titles() -> None:
    from synthaug.machinery.book import _order, page_title

    stems = ["02_generate-base", "03_train_ratio-base-gen5-real0-seed0", "02_generate"]
    stems += ["03_train_ratio-gen5-real0-seed0", "01_lora"]
    assert sorted(stems, key=_order) == [
        "01_lora",
        "02_generate",
        "02_generate-base",
        "03_train_ratio-gen5-real0-seed0",
        "03_train_ratio-base-gen5-real0-seed0",
    ]
    assert page_title("02_generate-base-shard1of2") == "02 · The synthetic set: base arm"
    assert page_title("02_generate-shard1of2") is None
    assert page_title("03_train_ratio-base-gen5-real0-seed0") == (
        "03 · base: generated 5 : real 0, seed 0"
    )


def test_conclusion_is_computed_from_the_table() -> None:
    table = pd.DataFrame(
        [
            {
                "n_generated": 2,
                "n_real": 8,
                "accuracy": 0.9,
                "accuracy_ci_low": 0.88,
                "accuracy_ci_high": 0.92,
                "real_only_accuracy": 0.8,
                "real_only_accuracy_ci_low": 0.78,
                "real_only_accuracy_ci_high": 0.82,
            },
            {
                "n_generated": 8,
                "n_real": 2,
                "accuracy": 0.5,
                "accuracy_ci_low": 0.4,
                "accuracy_ci_high": 0.6,
                "real_only_accuracy": 0.55,
                "real_only_accuracy_ci_low": 0.5,
                "real_only_accuracy_ci_high": 0.6,
            },
        ]
    )
    base = pd.DataFrame([{"baseline": "real only, full size", "accuracy": 0.91}])
    text = conclusion(table, base)
    assert "ranges from 0.500 to 0.900 (best: 2 generated + 8 real)" in text
    assert "is better than it in 1 of 2 mixes; is within the 95% CI of it in 1 of 2" in text
    assert "Real only, full size: 0.910." in text


# PatternNet's 38 class names, as its hub card lists them (ClassLabel names, with spaces).
PATTERNNET = [
    "airplane",
    "baseball field",
    "basketball court",
    "beach",
    "bridge",
    "cemetery",
    "chaparral",
    "christmas tree farm",
    "closed road",
    "coastal mansion",
    "crosswalk",
    "dense residential",
    "ferry terminal",
    "football field",
    "forest",
    "freeway",
    "golf course",
    "harbor",
    "intersection",
    "mobile home park",
    "nursing home",
    "oil gas field",
    "oil well",
    "overpass",
    "parking lot",
    "parking space",
    "railway",
    "river",
    "runway",
    "runway marking",
    "shipping yard",
    "solar panel",
    "sparse residential",
    "storage tank",
    "swimming pool",
    "tennis court",
    "transformer station",
    "wastewater treatment plant",
]


@pytest.fixture(scope="module")
def patternnet_like(tmp_path_factory, ucmerced):
    """A small `save_to_disk` folder of PatternNet's schema: one `train` split, `image`
    (256x256 real aerial JPEGs), `label` a ClassLabel of the 38 names; 4 images a class."""
    import datasets

    unique = {f.read_bytes(): f for f in sorted(ucmerced.glob("*/*.jpg"), reverse=True)}
    files = sorted(unique.values())[: 4 * len(PATTERNNET)]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=PATTERNNET)}
    )
    rows = {
        "image": [{"bytes": f.read_bytes(), "path": None} for f in files],
        "label": [i // 4 for i in range(len(files))],
    }
    folder = tmp_path_factory.mktemp("patternnet") / "patternnet"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows, features=features)}
    ).save_to_disk(str(folder))
    return folder


@pytest.fixture
def hub_models(monkeypatch) -> list[str]:
    """The paper's hub models, as if cached: the model checks are recorded, not sent."""
    checked: list[str] = []
    monkeypatch.setattr("synthaug.sources.check_model", lambda repo, *_: checked.append(repo))
    return checked


def _paper_on(folder, output_dir, **overrides) -> dict:
    """params/paper.yaml on the local folder, with splits that fit 4 images a class."""
    return {
        "output_dir": str(output_dir),
        "dataset.hub_id": str(folder),
        "dataset.local": None,
        "splits.lora": 38,
        "splits.test": 38,
        **overrides,
    }


def test_paper_plan_that_cannot_be_drawn_stops_before_any_compute(
    patternnet_like, tmp_path, hub_models
) -> None:
    with pytest.raises(DataError) as caught:
        run_study(ROOT / "params/paper.yaml", _paper_on(patternnet_like, tmp_path), dry_run=True)
    message = str(caught.value)
    assert (
        "cell gen2000-real8000 needs 211 real images of class 'airplane' (8000 over 38 "
        "classes) but only 2 are available (and 37 more classes); raise splits.pool" in message
    )
    assert message.count("cell ") == 15  # 7 mixes, their 7 real-only baselines, full real
    assert not (tmp_path / "paper").exists()  # nothing was written, nothing ran


def test_a_filter_that_keeps_too_few_stops_the_dry_run(tmp_path) -> None:
    """2 kept images per class (of 6 candidates) cannot feed a CAS cell drawing 3."""
    overrides = {
        "output_dir": str(tmp_path),
        "generation.arms": "[lora, filtered]",
        "generation.count": 10,
        "generation.oversample": 3,
    }
    with pytest.raises(DataError) as caught:
        run_study(ROOT / "params/smoke.yaml", overrides, dry_run=True, echo=lambda _: None)
    assert (
        "cell filtered-gen15-real0 needs 3 generated images of class 'agricultural' (15 over "
        "5 classes) but the filter keeps only 2 of its 6 candidates (and 4 more classes); "
        "raise generation.count" in str(caught.value)
    )
    assert not (tmp_path / "smoke").exists()


def test_paper_plan_that_fits_lists_its_tasks(patternnet_like, tmp_path, hub_models) -> None:
    lines: list[str] = []
    todo = run_study(
        ROOT / "params/paper.yaml",
        _paper_on(patternnet_like, tmp_path, **{"study.total": 76}),
        dry_run=True,
        echo=lines.append,
    )
    # 7 mixes + 7 same-real baselines + full real + CAS (61 generated, = real-only 61), x 3 seeds
    assert len(todo) == 2 + 16 * 3 + 2
    assert any("'n_generated': 61, 'n_real': 0" in line for line in lines)
    assert hub_models == ["black-forest-labs/FLUX.1-dev", "google/vit-base-patch16-224-in21k"]
    prompts = [line.split(" -> ") for line in lines if line.startswith("  '")]
    assert len(prompts) == 38
    assert ["'baseball field'", "'an aerial image of baseball field'"] in [
        [word.strip() for word in pair] for pair in prompts
    ]


def test_generated_only_baseline_fits_the_generated_set() -> None:
    """The paper's CAS cell draws the 8,000 images the paper generated, not the 10,000 of a
    mix: with too few generated images the plan names the cells that cannot be drawn."""
    from synthaug.config import load_config
    from synthaug.data import ImageRecord, Manifest
    from synthaug.design import shortfalls, study_cells

    cfg = load_config(ROOT / "params/paper.yaml")
    assert cfg.study.generated_only_count == cfg.generation.count == 8000
    pool = [ImageRecord(f"{c}/{i}", c, "", "pool") for c in PATTERNNET for i in range(700)]
    manifest = Manifest(classes=sorted(PATTERNNET), records=pool)
    assert shortfalls(cfg, study_cells(cfg, 38), manifest) == []
    fewer = load_config(ROOT / "params/paper.yaml", {"generation.count": 7000})
    problems = shortfalls(fewer, study_cells(fewer, 38), manifest)
    assert [p.split(" needs")[0] for p in problems] == [
        "cell gen8000-real2000",
        "cell gen8000-real0",
    ]
    assert "185 are available" in problems[0] and "raise generation.count" in problems[0]


def test_gpu_smoke_profile_runs_with_the_paper_precision_settings(tmp_path, ucmerced) -> None:
    """bf16, gradient checkpointing, batch-1 LoRA, full bf16 fine-tune: on the CPU here, on
    CUDA where there is one."""
    from synthaug.config import load_config
    from synthaug.io import read_json

    profile = ROOT / "params/gpu-smoke.yaml"
    todo = run_study(profile, {"output_dir": str(tmp_path)}, echo=lambda _: None)
    assert len(todo) == 2 + 6 + 2
    run = load_config(profile, {"output_dir": str(tmp_path)}).run_dir
    lora = read_json(run / "lora/summary.json")
    assert lora["steps"] == 20 * 2 * 2 and lora["mixed_precision"] == "bf16"
    assert lora["gradient_checkpointing"] and lora["epoch_loss"][-1]["loss"] > 0
    assert read_json(run / "generated/settings.json")["precision"] == "bf16"
    cell = read_json(run / "cells/gen5-real15-seed0/metrics.json")
    assert cell["classifier"]["mode"] == "full" and cell["classifier"]["mixed_precision"] == "bf16"
    assert (run / "book/_build/html/04_analysis.html").is_file()


def test_printed_tasks_run_from_a_shell_loop_give_the_study(tmp_path, small_local_study) -> None:
    """`--print-tasks` for a cluster's scheduler: each line run alone, in order, gives the
    same cells as `synthaug run`, which afterwards finds every task done."""
    import os
    import subprocess

    from synthaug.machinery.study import task_commands

    small = SMALL_SMOKE
    lines = task_commands(ROOT / "params/smoke.yaml", {"output_dir": str(tmp_path / "a"), **small})
    assert [line for line in lines if line.startswith("#")] == [
        "# stage lora: 1 task(s)",
        "# stage generate: 1 task(s)",
        "# stage classify: 4 task(s), independent: run them in any order or at once",
        "# stage analysis: 1 task(s)",
        "# stage book: 1 task(s)",
    ]
    # `synthaug run` shares the cores between its two side-by-side classifier kernels
    # (study.workers: 2); so does the loop, for results equal to the last bit
    stage = ""
    for line in lines:
        if line.startswith("#"):
            stage = line.split()[2].rstrip(":")
            continue
        threads = str(max(1, (os.cpu_count() or 1) // 2))
        env = {**os.environ, **({"OMP_NUM_THREADS": threads} if stage == "classify" else {})}
        subprocess.run(["bash", "-c", line], check=True, capture_output=True, env=env)
    printed = smoke_config(tmp_path / "a", **small)
    assert printed.paths.book_index.exists()
    again = run_study(
        ROOT / "params/smoke.yaml",
        {"output_dir": str(tmp_path / "a"), **small},
        echo=lambda _line: None,
    )
    assert again == []  # every task is found done
    redraw = task_commands(
        ROOT / "params/smoke.yaml",
        {"output_dir": str(tmp_path / "a"), **small},
        stage="analysis",
        rebuild=True,
    )
    assert redraw[0] == "# stage analysis: 1 task(s)" and "04_analysis" in redraw[1]
    assert len(redraw) == 2
    assert len(cell_results(printed)) == 4
    assert cell_results(printed) == cell_results(small_local_study)


def test_a_base_of_another_family_stops_the_dry_run(patternnet_like, tmp_path, monkeypatch) -> None:
    """The base's model_index.json is read before any weights: a FLUX.1 base under
    generator.family flux2-klein stops the plan with the fix."""
    from synthaug.families import FamilyMismatchError

    index = tmp_path / "model_index.json"
    index.write_text(json.dumps({"_class_name": "FluxPipeline"}))
    monkeypatch.setattr("synthaug.sources.check_model", lambda repo, *_: index)
    overrides = _paper_on(patternnet_like, tmp_path, **{"study.total": 76})
    with pytest.raises(FamilyMismatchError, match="holds a FluxPipeline: set generator.family"):
        run_study(ROOT / "params/paper-flux2-klein.yaml", overrides, dry_run=True)
