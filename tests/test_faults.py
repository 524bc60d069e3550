"""What users do to a run folder, each fault once, on the small smoke study run by the CLI:
two runs at once, a full disk, a folder it may not write, a kernel killed, Ctrl-C. Each
ends in one message; then the cause is removed, the same command is run again, and what
it made equals, byte for byte, what an uninterrupted run made."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from synthaug.config import StudyConfig
from synthaug.io import safetensors_digest
from synthaug.machinery.study import fault_line

from .conftest import ROOT, SMALL_SMOKE, cell_results, smoke_config


def command(out: Path, *extra: str) -> list[str]:
    """`synthaug run` of the small smoke study up to its cells, writing under `out`."""
    args = [sys.executable, "-m", "synthaug.machinery.cli", "run", "-f", "params/smoke.yaml"]
    for key, value in {"output_dir": str(out), **SMALL_SMOKE}.items():
        args += ["-p", key, value]
    return [*args, "--stage", "classify", *extra]


def start(out: Path) -> subprocess.Popen:
    """The run in its own process group, as a terminal's foreground job is."""
    return subprocess.Popen(
        command(out), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=_ctrl_c_as_in_a_terminal,
    )  # fmt: skip


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT's default action in the run, as in a terminal's foreground job: a suite
    started in the background (`pytest &`) hands its children SIGINT ignored, and Python
    keeps an ignored SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command(out), cwd=ROOT, capture_output=True, text=True, timeout=900)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 600) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def made(cfg: StudyConfig) -> dict[str, object]:
    """What the run made: the LoRA's and every cell's probabilities' tensors bit for bit
    (safetensors headers may list metadata in another order), the loss log and the
    manifests (image hashes included) byte for byte, and every cell's metrics (timings
    aside)."""
    tensors = [cfg.paths.lora_weights, *sorted(cfg.paths.cells.glob("*/probabilities.safetensors"))]
    files = [cfg.paths.lora / "loss.csv", cfg.paths.manifest, cfg.paths.generated_manifest]
    return {
        "tensors": {str(p.relative_to(cfg.run_dir)): safetensors_digest(p) for p in tensors},
        "files": {str(p.relative_to(cfg.run_dir)): p.read_bytes() for p in files},
        "cells": cell_results(cfg),
    }


def the_study(out: Path) -> StudyConfig:
    return smoke_config(out, **SMALL_SMOKE)


def stopped_line(done: subprocess.CompletedProcess | tuple[int, str]) -> str:
    """The run's last line on stderr, after checking it is the only one of its kind."""
    stderr = done.stderr if isinstance(done, subprocess.CompletedProcess) else done[1]
    lines = [line for line in stderr.splitlines() if line.startswith("stopped: ")]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(scope="module")
def reference(small_local_study) -> dict[str, object]:
    return made(small_local_study)


def test_a_second_run_of_the_same_study_stops_at_once(tmp_path, reference) -> None:
    first = start(tmp_path)
    lock = the_study(tmp_path).run_dir / ".lock.json"
    wait_for(lambda: lock.exists(), "the first run to hold the folder")
    begun = time.monotonic()
    second = run(tmp_path)
    assert time.monotonic() - begun < 30 and second.returncode == 2
    assert f"in use by pid {first.pid} on " in second.stderr
    assert "run the same command again" in second.stderr and "Traceback" not in second.stderr
    exporting = [arg if arg != "run" else "export" for arg in command(tmp_path)[:-2]]
    export = subprocess.run(
        [*exporting, "--to", str(tmp_path / "export")], cwd=ROOT, capture_output=True, text=True
    )
    assert export.returncode == 2 and "in use by pid" in export.stderr
    assert first.wait(timeout=900) == 0, first.stderr.read()[-3000:]
    assert made(the_study(tmp_path)) == reference


def test_ctrl_c_stops_in_seconds_says_so_leaves_nothing_and_resumes(tmp_path, reference) -> None:
    cfg = the_study(tmp_path)
    job = start(tmp_path)
    running = cfg.paths.notebooks / "01_lora.running.ipynb"
    wait_for(lambda: running.exists() and descendants(job.pid), "the LoRA's notebook")
    time.sleep(3)
    children = descendants(job.pid)
    os.killpg(job.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
    begun = time.monotonic()
    rc = job.wait(timeout=60)
    assert time.monotonic() - begun < 15
    line = stopped_line((rc, job.stderr.read()))
    assert rc == 130 and "interrupted (Ctrl-C)" in line and "01_lora" in line
    assert "run the same command to resume" in line
    time.sleep(1)
    assert not [p for p in children if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    again = run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert made(cfg) == reference


def test_a_killed_kernel_is_one_message_and_the_rerun_resumes(tmp_path, reference) -> None:
    cfg = the_study(tmp_path)
    job = start(tmp_path)

    def a_cell_runs() -> bool:
        return any(cfg.paths.notebooks.glob("03_train_ratio-*.running.ipynb"))

    wait_for(a_cell_runs, "a classifier cell to run")
    kernels = [p for p in descendants(job.pid) if "ipykernel" in " ".join(p.cmdline())]
    assert kernels
    kernels[0].kill()  # as the kernel's out-of-memory killer would
    rc = job.wait(timeout=300)
    line = stopped_line((rc, job.stderr.read()))
    assert rc == 1 and "kernel died" in line and "03_train_ratio-" in line
    assert "traceback: " in line and Path(line.split("traceback: ")[1].rstrip(")")).is_file()
    again = run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert made(cfg) == reference


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MB file system of its own, where the small study writes about 3.3 MB (tmpfs;
    needs root), unmounted after."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(folder)])
    if mounted.returncode != 0:
        pytest.skip("mounting a small file system needs root (mount -t tmpfs)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_one_message_and_the_rerun_resumes(small_disk, reference) -> None:
    done = run(small_disk)
    line = stopped_line(done)
    assert done.returncode == 1 and "the disk is full" in line, line
    assert "run the same command to resume" in line
    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
    again = run(small_disk)
    assert again.returncode == 0, again.stderr[-3000:]
    assert made(the_study(small_disk)) == reference


def test_a_folder_it_may_not_write_is_one_message(small_disk) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    done = run(small_disk)
    line = stopped_line(done)
    assert done.returncode == 1 and "no permission to write" in line, line
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)


def test_a_denied_write_reads_as_such() -> None:
    """As root no folder refuses a write; the message of one that does, from its error."""
    denied = PermissionError(13, "Permission denied", "/data/runs/x/cells")
    assert fault_line(denied).startswith("no permission to write (/data/runs/x/cells)")


def test_a_half_written_notebook_is_redone_with_one_warning(tmp_path, reference) -> None:
    """A truncated executed notebook (two runs of an older version at once left one) is
    not done: the run warns once, redoes it and finishes."""
    assert run(tmp_path).returncode == 0
    cfg = the_study(tmp_path)
    damaged = cfg.paths.executed("02_generate")
    damaged.write_bytes(damaged.read_bytes()[:1000])
    again = run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    warnings = [line for line in again.stderr.splitlines() if "cannot be read" in line]
    assert len(warnings) == 1 and "02_generate.ipynb" in warnings[0]
    json.loads(damaged.read_text())  # whole again
    assert made(cfg) == reference
