"""`synthaug run --executor slurm` against a real single-node SLURM (`.ci/slurm-up` starts
one: Debian's slurm with accounting). Where none answers, these tests skip and say why."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from synthaug.config import ConfigError, load_config
from synthaug.machinery import slurm
from synthaug.machinery.cli import main
from synthaug.machinery.study import StudyError, prepare_tasks

from .conftest import ROOT, SMALL_SMOKE, cell_results, smoke_config

PROFILE = ROOT / "params" / "smoke.yaml"


def _no_cluster() -> str | None:
    """Why no SLURM cluster can take jobs here, or None when one can."""
    if shutil.which("sbatch") is None:
        return "no SLURM here (sbatch not found); `.ci/slurm-up`, as root, starts one"
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20
        ).stdout.split()
    except subprocess.TimeoutExpired:
        return "SLURM's controller does not answer; `.ci/slurm-up`, as root, starts it"
    if not {"idle", "mixed", "allocated"} & set(states):
        return f"no SLURM node takes jobs (sinfo: {states}); `.ci/slurm-up` starts one"
    return None


NO_CLUSTER = _no_cluster()
needs_cluster = pytest.mark.skipif(bool(NO_CLUSTER), reason=NO_CLUSTER or "")


def test_each_stage_asks_for_its_own_resources_after_the_stages_before_it() -> None:
    cfg = load_config(
        ROOT / "params/paper.yaml",
        {"cluster.partition": "gpu", "cluster.max_parallel": "8", "cluster.account": "lab"},
    )
    command = slurm.sbatch_command(cfg, "classify", 42, "logs/classify-%A_%a.out", ["7", "8"])
    assert command[2:4] == ["--job-name=synthaug-paper-classify", "--array=0-41%8"]
    assert {"--cpus-per-task=8", "--gres=gpu:1", "--mem=48G", "--time=1:00:00"} <= set(command)
    assert {"--partition=gpu", "--account=lab", "--dependency=afterok:7:8"} <= set(command)
    book = slurm.sbatch_command(cfg, "book", 1, "book.out", [])
    assert not any(arg.startswith(("--gres", "--dependency")) for arg in book)
    with pytest.raises(ConfigError, match=r"cluster.lora.sbatch_options: .*start with '-'"):
        load_config(PROFILE, {"cluster.lora.sbatch_options": "[qos=high]"})
    with pytest.raises(ConfigError, match=r"cluster.classify.time"):
        load_config(PROFILE, {"cluster.classify.time": "an hour"})


def test_pending_array_records_of_sacct_name_each_task() -> None:
    assert slurm._array_tasks("12_3") == ["12_3"]
    assert slurm._array_tasks("12_[0-2,5%4]") == ["12_0", "12_1", "12_2", "12_5"]


@pytest.fixture(scope="module")
def on_cluster(tmp_path_factory):
    """The small smoke study, submitted to the cluster and followed to its end."""
    out = tmp_path_factory.mktemp("slurm")
    overrides = {"output_dir": str(out), **SMALL_SMOKE}
    lines: list[str] = []
    jobs = slurm.run_on_cluster(PROFILE, overrides, echo=lines.append)
    return overrides, smoke_config(out, **SMALL_SMOKE), jobs, lines


@needs_cluster
def test_study_on_slurm_gives_the_cells_of_a_local_run(on_cluster, small_local_study, capsys):
    overrides, cfg, jobs, lines = on_cluster
    # a job array per stage, each after the ones before it, its logs in the run folder
    assert [(job.stage, len(job.tasks)) for job in jobs] == [
        ("lora", 1),
        ("generate", 1),
        ("classify", 4),
        ("analysis", 1),
        ("book", 1),
    ]
    script = (cfg.paths.slurm / "classify.sh").read_text()
    assert '--name "${tasks[$SLURM_ARRAY_TASK_ID]}"' in script
    for job in jobs:
        for index in range(len(job.tasks)):
            assert "done" in (cfg.paths.slurm / f"{job.stage}-{job.job_id}_{index}.out").read_text()
    accounted = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", jobs[2].job_id, "-o", "JobName,State"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert accounted == ["synthaug-smoke-classify|COMPLETED"] * 4
    # live counts while it ran, and the answer at the end
    assert any("classify 4 pending" in line for line in lines)
    assert any(line.endswith("book 1 done") for line in lines)
    assert any(line.startswith("  generated only (CAS)") for line in lines)
    assert cfg.paths.book_index.exists()
    # the same cells as `synthaug run`, to the last digit
    assert len(cell_results(cfg)) == 4
    assert cell_results(cfg) == cell_results(small_local_study)
    # nothing is submitted again; `synthaug status` reads the counts from another process
    assert slurm.run_on_cluster(PROFILE, overrides, echo=lambda _: None) == []
    flags = [arg for key, value in overrides.items() for arg in ("-p", key, value)]
    assert main(["status", "-f", str(PROFILE), *flags]) == 0
    shown = capsys.readouterr().out
    assert "finished on the cluster" in shown
    assert f"classify (job {jobs[2].job_id}, 4 tasks): 4 done" in shown


@needs_cluster
def test_failed_cell_is_reported_and_a_resubmission_completes_it(on_cluster, capsys):
    overrides, cfg, _, _ = on_cluster
    before = cell_results(cfg)
    # one cell's output folder is taken by a file: that cell alone cannot write
    cell = "gen10-real10-seed0"
    kept = {name: cfg.paths.cell_metrics(name).stat().st_mtime for name in before if name != cell}
    shutil.rmtree(cfg.paths.cells / cell)
    cfg.paths.executed(f"03_train_ratio-{cell}").unlink()
    (cfg.paths.cells / cell).write_text("not a folder")

    with pytest.raises(StudyError) as failed:
        slurm.run_on_cluster(PROFILE, overrides, echo=lambda _: None)
    jobs = slurm.read_submission(cfg)
    assert [(job.stage, job.tasks) for job in jobs] == [
        ("classify", [f"03_train_ratio-{cell}"]),
        ("analysis", ["04_analysis"]),
        ("book", ["book"]),
    ]
    report = str(failed.value)
    task = f"03_train_ratio-{cell}"
    assert f"{task} FAILED: 03_train_ratio.ipynb ({task}) failed in cell" in report
    assert "FileExistsError" in report or "NotADirectoryError" in report
    assert f"log: {cfg.paths.slurm / f'classify-{jobs[0].job_id}_0.out'}" in report
    assert "analysis: 1 task cancelled" in report and "book: 1 task cancelled" in report
    # the other cells' outputs are kept untouched
    for name, mtime in kept.items():
        assert cfg.paths.cell_metrics(name).stat().st_mtime == mtime

    # fixed: the same command submits only what failed (up to the cells here, to keep
    # the test short); while it runs, a second one follows it instead of submitting it
    # twice, and a local run refuses
    (cfg.paths.cells / cell).unlink()
    _, given, todo = prepare_tasks(PROFILE, overrides, "classify", False, 1)
    resubmitted = slurm.submit(cfg, PROFILE, given, todo)
    flags = [arg for key, value in overrides.items() for arg in ("-p", key, value)]
    assert main(["run", "-f", str(PROFILE), *flags]) == 2
    assert "is running on the cluster" in capsys.readouterr().err
    lines: list[str] = []
    followed = slurm.run_on_cluster(PROFILE, overrides, stage="classify", echo=lines.append)
    assert lines[0] == "study smoke is already on the cluster; following it"
    assert [(job.job_id, job.tasks) for job in followed] == [
        (resubmitted[0].job_id, [f"03_train_ratio-{cell}"])
    ]
    assert cell_results(cfg) == before


@needs_cluster
def test_a_stage_sbatch_refuses_leaves_nothing_queued(tmp_path) -> None:
    overrides = {"output_dir": str(tmp_path), **SMALL_SMOKE, "cluster.book.partition": "nosuch"}
    with pytest.raises(StudyError, match=r"(?s)invalid partition.*nothing of study smoke"):
        slurm.run_on_cluster(PROFILE, overrides, echo=lambda _: None)
    cfg = smoke_config(tmp_path, **SMALL_SMOKE)
    assert slurm.read_submission(cfg) is None
    queued = subprocess.run(
        ["squeue", "-h", "-n", "synthaug-smoke-lora", "-t", "PENDING,RUNNING", "-o", "%i"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert queued == []
