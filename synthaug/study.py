"""The whole study: run the notebooks with papermill in order, resumably, then build the book.

01_lora, 02_generate, then 03_train_ratio once per (mix, seed) and per baseline, then
04_analysis, then the Jupyter Book. Each executed notebook is saved under
`runs/<name>/notebooks/` with its parameters. A task whose executed notebook exists and
whose stage output is complete and current is skipped, so a rerun after a kill does only
what is missing and a finished study reruns in seconds.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthaug.config import StudyConfig, apply_overrides, build_config, project_root, read_yaml
from synthaug.kernels import WarmKernel

STAGES = ("lora", "generate", "train", "analysis", "book")


class StudyError(RuntimeError):
    """A notebook of the study failed; the message names the notebook and the cell."""


@dataclass
class Task:
    stage: str
    name: str
    notebook: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    is_done: Callable[[], bool] = lambda: False


def notebooks_dir(cfg: StudyConfig) -> Path:
    return cfg.run_dir / "notebooks"


def _executed(cfg: StudyConfig, name: str) -> Path:
    return notebooks_dir(cfg) / f"{name}.ipynb"


def plan(cfg: StudyConfig, until: str | None = None) -> list[Task]:
    """Every task of the study, up to and including stage `until`."""
    from synthaug.book import book_is_current
    from synthaug.classify import CellRunner, study_cells
    from synthaug.generate import is_complete
    from synthaug.lora import is_trained

    stages = STAGES[: STAGES.index(until) + 1] if until else STAGES
    tasks: list[Task] = []

    def done(name: str, check: Callable[[], bool]) -> Callable[[], bool]:
        return lambda: _executed(cfg, name).exists() and check()

    if "lora" in stages:
        tasks.append(
            Task("lora", "01_lora", "01_lora", {}, done("01_lora", lambda: is_trained(cfg)))
        )
    if "generate" in stages:
        tasks.append(
            Task(
                "generate",
                "02_generate",
                "02_generate",
                {},
                done("02_generate", lambda: is_complete(cfg)),
            )
        )
    if "train" in stages:
        runner: list[CellRunner] = []

        def cell_done(cell) -> bool:
            if not runner:
                runner.append(CellRunner(cfg))
            return runner[0].is_done(cell)

        for cell in study_cells(cfg.study):
            name = f"03_train_ratio-{cell.name}"
            params = {"n_generated": cell.n_generated, "n_real": cell.n_real, "seed": cell.seed}
            tasks.append(
                Task(
                    "train", name, "03_train_ratio", params, done(name, lambda c=cell: cell_done(c))
                )
            )
    if "analysis" in stages:

        def analysis_current() -> bool:
            mine = _executed(cfg, "04_analysis")
            others = [p for p in notebooks_dir(cfg).glob("0[123]_*.ipynb")]
            return mine.exists() and all(p.stat().st_mtime <= mine.stat().st_mtime for p in others)

        tasks.append(Task("analysis", "04_analysis", "04_analysis", {}, analysis_current))
    if "book" in stages:
        tasks.append(Task("book", "book", None, {}, lambda: book_is_current(cfg)))
    return tasks


def execute(
    task: Task, cfg: StudyConfig, sections: Mapping[str, Any], kernel: WarmKernel | None = None
) -> None:
    """Run one notebook with papermill (the profile's sections + the task's parameters),
    in `kernel` if given, else in a fresh kernel."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output = _executed(cfg, task.name)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_suffix(".running.ipynb")
    root = project_root()
    try:
        papermill.execute_notebook(
            root / "notebooks" / f"{task.notebook}.ipynb",
            partial,
            parameters={**sections, **task.parameters},
            cwd=str(root),
            progress_bar=False,
            **(kernel.papermill_kwargs() if kernel else {}),
        )
    except PapermillExecutionError as error:
        raise StudyError(
            f"{task.notebook}.ipynb ({task.name}) failed in cell {error.exec_count}: "
            f"{error.ename}: {error.evalue}\nthe executed notebook is at {partial}; finished "
            "tasks are kept, rerun to continue"
        ) from None
    partial.replace(output)


def check_plan(cfg: StudyConfig, write: bool = True) -> None:
    """Before any compute: every cell of the study can be drawn from the splits and the
    generated count, or a `DataError` names each cell, the count it needs and the count
    available. (The splits themselves are checked when the manifest is made; it is written
    unless `write` is false, so the stages do not scan the dataset again.)"""
    from synthaug.classify import shortfalls, study_cells
    from synthaug.data import DataError, prepare_data

    problems = shortfalls(cfg, study_cells(cfg.study), prepare_data(cfg, write=write))
    if problems:
        raise DataError(f"study {cfg.name} cannot run as planned:\n  " + "\n  ".join(problems))


def run_study(
    profile: str | Path,
    overrides: Mapping[str, Any] | None = None,
    stage: str | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> list[Task]:
    """`synthaug run`: every task up to `stage` that is not done yet, in order."""
    sections = apply_overrides(read_yaml(profile), overrides or {})
    cfg = build_config(sections)
    check_plan(cfg, write=not dry_run)
    tasks = plan(cfg, stage)
    todo = [task for task in tasks if not task.is_done()]
    echo(
        f"study {cfg.name}: {len(tasks)} tasks, {len(tasks) - len(todo)} done, "
        f"{len(todo)} to run -> {cfg.run_dir}"
    )
    if dry_run:
        for task in tasks:
            status = "todo" if task in todo else "done"
            echo(f"  [{status}] {task.stage:9s} {task.name} {task.parameters or ''}")
        return todo
    progress = Progress(len(todo), echo)

    def run_one(task: Task, kernel: WarmKernel | None) -> None:
        task_start = time.perf_counter()
        if task.notebook is None:
            from synthaug.book import build_book

            build_book(cfg)
        else:
            execute(task, cfg, sections, kernel)
        progress.finished(task, time.perf_counter() - task_start)

    for stage in STAGES:
        batch = [task for task in todo if task.stage == stage]
        workers = cfg.study.workers if stage == "train" else 1
        if workers > 1 and batch:
            _prepare_parallel_cells(cfg, batch, echo)
        progress.begin_stage(len(batch))
        with _threads_per_kernel(workers) if workers > 1 else nullcontext():
            _run_batch(batch, workers, run_one, cfg.study.reuse_kernels)
    return todo


def _run_batch(
    tasks: list[Task],
    workers: int,
    run_one: Callable[[Task, WarmKernel | None], None],
    reuse_kernels: bool,
) -> None:
    """Run the tasks on `workers` threads, each with its own warm kernel (or a fresh
    kernel per notebook). The first failure stops the others from starting new tasks,
    and is raised once the tasks in flight have finished."""
    pending: queue.SimpleQueue[Task] = queue.SimpleQueue()
    for task in tasks:
        pending.put(task)
    failures: list[BaseException] = []

    def work() -> None:
        kernel = WarmKernel() if reuse_kernels else None
        try:
            while not failures:
                try:
                    task = pending.get_nowait()
                except queue.Empty:
                    return
                run_one(task, kernel)
        except BaseException as error:
            failures.append(error)
        finally:
            if kernel is not None:
                kernel.shutdown()

    if workers == 1:
        work()
    else:
        threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]


@dataclass
class Progress:
    """Tasks done / total, time elapsed, and the time the current stage still needs
    (from its own finished tasks: the stages' tasks differ in cost by orders of magnitude)."""

    total: int
    echo: Callable[[str], None]
    start: float = field(default_factory=time.perf_counter)
    done: int = 0
    stage_start: float = 0.0
    stage_done: int = 0
    stage_total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def begin_stage(self, tasks: int) -> None:
        self.stage_start, self.stage_done, self.stage_total = time.perf_counter(), 0, tasks

    def finished(self, task: Task, seconds: float) -> None:
        with self.lock:
            self.done += 1
            self.stage_done += 1
            now = time.perf_counter()
            line = (
                f"[{self.done}/{self.total}] {task.stage} {task.name}: {seconds:.1f}s "
                f"(elapsed {now - self.start:.0f}s"
            )
            if self.stage_done < self.stage_total:
                per_task = (now - self.stage_start) / self.stage_done
                left = per_task * (self.stage_total - self.stage_done)
                line += f"; {task.stage} stage: about {left:.0f}s more"
            self.echo(line + ")")


@contextmanager
def _threads_per_kernel(workers: int) -> Iterator[None]:
    """Kernels started meanwhile share the cores instead of each taking all of them
    (oversubscribed OpenMP threads made each small head-training step ~10x slower)."""
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    try:
        yield
    finally:
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = saved


def _prepare_parallel_cells(
    cfg: StudyConfig, tasks: list[Task], echo: Callable[[str], None]
) -> None:
    """Before cells run side by side, fill the shared feature cache once (linear probe)."""
    if cfg.classifier.mode != "linear_probe":
        return
    from synthaug.classify import CellRunner

    seconds = CellRunner(cfg).warm_features(
        with_generated=any(t.parameters["n_generated"] for t in tasks)
    )
    echo(f"features of every image cached in {seconds:.1f}s")
