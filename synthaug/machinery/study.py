"""The whole study: run the notebooks with papermill in order, resumably, then build the book.

01_lora, 02_generate, then 03_train_ratio once per (mix, seed) and per baseline, then
04_analysis, then the Jupyter Book. Each executed notebook is saved under
`runs/<name>/notebooks/` with its parameters. A task whose executed notebook exists and
whose stage output is complete and current is skipped, so a rerun after a kill does only
what is missing and a finished study reruns in seconds.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import queue
import shlex
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthaug import sources
from synthaug.analysis.answer import headline
from synthaug.classify import CellRunner
from synthaug.config import (
    TINY,
    ConfigError,
    StudyConfig,
    load_profile,
)
from synthaug.data import DataError, prepare_data
from synthaug.design import Cell, shortfalls, study_cells
from synthaug.families import family_named
from synthaug.flow import prompt_for
from synthaug.io import atomic_write_text, read_json
from synthaug.machinery.executed import shorten_paths
from synthaug.machinery.kernels import WarmKernel, kill_all
from synthaug.machinery.lock import study_lock
from synthaug.machinery.stages import STAGE_NAMES, Task, list_tasks, stage_devices, stage_named
from synthaug.models import DINOV2_OFFLINE
from synthaug.paths import project_root
from synthaug.runtime.progress import STATUS_ENV, LiveStatus, clock
from synthaug.runtime.provenance import write_config
from synthaug.sources import locate
from synthaug.timm_backbone import TINY_TIMM

if TYPE_CHECKING:
    from synthaug.data import Manifest

log = logging.getLogger(__name__)


class StudyError(RuntimeError):
    """A notebook of the study failed; the message names the notebook and the cell."""


class RunStopped(RuntimeError):
    """A run stopped by what surrounds it (a full disk, a folder it may not write, a
    kernel killed, Ctrl-C); the message is the one line the user reads."""

    def __init__(self, message: str, interrupted: bool = False) -> None:
        super().__init__(message)
        self.interrupted = interrupted


# What a kernel's failure says when its cause is the machine's, not the study's
DISK_FULL, NO_WRITE = "No space left on device", ("Permission denied", "Read-only file system")


def _chain(error: BaseException) -> list[BaseException]:
    chain = [error]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) and len(chain) < 10:
        chain.append(cause)
    return chain


def fault_line(error: BaseException) -> str | None:
    """What stopped a run, in words and with the fix, when the machine stopped it (not a
    bug of the study's); None otherwise."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    chain = _chain(error)
    named = next((e for e in chain if isinstance(e, OSError) and e.filename), None)
    where = f" ({named.filename})" if named else ""
    errnos = {e.errno for e in chain if isinstance(e, OSError)}
    text = " ".join(str(e) for e in chain)
    if errno.ENOSPC in errnos or DISK_FULL in text:
        return f"the disk is full{where}: free some space"
    if errnos & {errno.EACCES, errno.EPERM, errno.EROFS} or any(t in text for t in NO_WRITE):
        return (
            f"no permission to write{where}: make the run folder writable, or set "
            "output_dir to a folder that is"
        )
    if any(type(e).__name__ == "DeadKernelError" for e in chain) or "Kernel died" in text:
        return (
            "its Jupyter kernel died (killed, most often for memory: fewer study.workers "
            "or smaller batches need less)"
        )
    return None


def _log_traceback(cfg: StudyConfig, error: BaseException) -> Path | None:
    """The error's traceback in `logs/`, or None where it cannot be written (a full disk)."""
    path = cfg.paths.kernel_log.parent / f"stopped-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        atomic_write_text(path, "".join(traceback.format_exception(error)))
    except OSError:
        return None
    return path


@contextmanager
def faults_in_one_line(cfg: StudyConfig, running: list[str]) -> Iterator[None]:
    """Inside the block, a fault `fault_line` knows is raised as one `RunStopped` naming
    the tasks in `running`; anything else as it is."""
    try:
        yield
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            kill_all()  # the workers' kernels, still in their cells
        if (fault := stopped(cfg, error, running)) is None:
            raise
        # the interrupted cells' client tasks end unawaited; asyncio would print each
        # one's traceback at exit, after the one line that says what happened
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        raise fault from error


def stopped(cfg: StudyConfig, error: BaseException, tasks: list[str]) -> RunStopped | None:
    """The one-line `RunStopped` for a fault `fault_line` knows, naming the tasks that were
    running; None for any other error (raised as it is)."""
    what = fault_line(error)
    if what is None:
        return None
    log = _log_traceback(cfg, error)
    details = f" (traceback: {log})" if log else ""
    during = ", ".join(sorted(tasks)) or "the set-up"
    return RunStopped(
        f"study {cfg.name} stopped during {during}: {what}. Finished tasks are kept; run "
        f"the same command to resume{details}",
        interrupted=isinstance(error, KeyboardInterrupt),
    )


def execute(
    task: Task,
    cfg: StudyConfig,
    sections: Mapping[str, Any],
    kernel: WarmKernel | None = None,
    kernel_log: Path | None = None,
) -> None:
    """Run one task in this process: its stage's `build`, or its notebook with papermill
    (the profile's sections + the task's parameters) in `kernel` if given, else in a fresh
    kernel whose own output goes to `kernel_log`."""
    build = stage_named(task.stage).build
    if build is not None:
        build(cfg)
        return None
    if kernel is None:
        fresh = WarmKernel(log=kernel_log)
        try:
            return execute(task, cfg, sections, fresh)
        finally:
            fresh.shutdown()
    # deferred: notebook machinery, imported only when notebooks run or the book is built
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output = cfg.paths.executed(task.name)
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
            **kernel.papermill_kwargs(),
        )
    except PapermillExecutionError as error:
        raise StudyError(
            f"{task.notebook}.ipynb ({task.name}) failed in cell {error.exec_count}: "
            f"{error.ename}: {error.evalue}\nthe executed notebook is at {partial}; finished "
            "tasks are kept, rerun to continue"
        ) from None
    shorten_paths(partial)
    partial.replace(output)


def check_design(cfg: StudyConfig, write: bool = True) -> Manifest:
    """Before any compute: every cell of the study can be drawn from the splits and the
    generated count, or a `DataError` names each cell, the count it needs and the count
    available. (The splits themselves are checked when the manifest is made; it is written
    unless `write` is false, so the stages do not scan the dataset again.)"""

    check_models(cfg)
    manifest = prepare_data(cfg, write=write)
    problems = shortfalls(cfg, study_cells(cfg, len(manifest.classes)), manifest)
    problems += [
        f"dataset.class_words names {label!r}, which is not a class of the study"
        for label in sorted(set(cfg.dataset.class_words) - set(manifest.classes))
    ]
    if problems:
        raise DataError(f"study {cfg.name} cannot run as planned:\n  " + "\n  ".join(problems))
    return manifest


def check_models(cfg: StudyConfig) -> None:
    """Every hub model the study loads can be had (cached, or downloadable with access),
    or a `SourceError` says why, before any data is read or compute spent."""

    base = cfg.generator.base_model
    if base != TINY:
        index = sources.check_model(base, "generator.base_model", "model_index.json")
        if index and index.is_file():  # the family the base holds, before any weights load
            found = read_json(index).get("_class_name")
            family_named(cfg.generator.family).check_class(found, base)
    if cfg.classifier.model not in (TINY, TINY_TIMM, DINOV2_OFFLINE):
        sources.check_model(cfg.classifier.model, "classifier.model", "config.json")


def data_line(cfg: StudyConfig, manifest: Manifest) -> str:
    """Where the study's real images come from, and how many of them the splits use."""

    return (
        f"{locate(cfg.dataset).describe()}: {len(manifest.classes)} classes, "
        f"{len(manifest.records)} images in the splits"
    )


def prompt_lines(cfg: StudyConfig, classes: list[str]) -> list[str]:
    """Each class's prompt, as the LoRA and generation will use it (shown by dry runs)."""

    return [f"  {label!r:28s} -> {prompt_for(cfg, label)!r}" for label in classes]


def _check_rebuild(stage: str | None, rebuild: bool) -> None:
    if rebuild and stage is None:
        raise ConfigError("rebuild needs a stage: e.g. --stage analysis --rebuild")


def _to_run(tasks: list[Task], stage: str | None, rebuild: bool) -> list[Task]:
    """The tasks not done yet, with `rebuild` `stage`'s done ones too, and the analysis
    and the book whenever a task before them is to run (they read every earlier output)."""
    todo: list[Task] = []
    for task in tasks:
        stale = task.stage in ("analysis", "book") and bool(todo)
        if stale or (rebuild and task.stage == stage) or not task.is_done():
            todo.append(task)
    return todo


def prepare_tasks(
    profile: str | Path,
    overrides: Mapping[str, Any] | None,
    stage: str | None,
    rebuild: bool,
    shards: int | None = None,
) -> tuple[StudyConfig, dict[str, Any], list[Task]]:
    """For tasks run elsewhere (printed or submitted): the config, the parsed overrides and
    the tasks still to do, after the design check, with the manifest and the resolved
    config written once, before tasks run side by side."""
    _check_rebuild(stage, rebuild)
    read = load_profile(profile, overrides)
    cfg, given = read.cfg, read.overrides
    check_design(cfg)
    write_config(cfg)
    return cfg, given, _to_run(list_tasks(cfg, stage, shards), stage, rebuild)


def override_flags(given: Mapping[str, Any]) -> str:
    """The overrides as shell-quoted `-p KEY VALUE` flags (values as JSON, which YAML reads)."""

    return "".join(f" -p {shlex.quote(k)} {shlex.quote(json.dumps(v))}" for k, v in given.items())


def task_commands(
    profile: str | Path,
    overrides: Mapping[str, Any] | None = None,
    stage: str | None = None,
    rebuild: bool = False,
) -> list[str]:
    """`synthaug run --print-tasks`: the tasks still to do (with `rebuild`, `stage`'s
    too), one self-contained shell command each, in dependency order, each stage's block
    headed by a `#` line. Tasks of one stage do not depend on each other (a scheduler may
    run them at once); each writes only its own outputs, and a later `synthaug run` finds
    them done."""

    cfg, given, todo = prepare_tasks(profile, overrides, stage, rebuild)
    root = project_root()
    profile_arg = shlex.quote(str(Path(profile).resolve()))
    cd = f"cd {shlex.quote(str(root))} && "
    lines = []
    for name in STAGE_NAMES:
        batch = [task for task in todo if task.stage == name]
        if not batch:
            continue
        together = ", independent: run them in any order or at once" if len(batch) > 1 else ""
        lines.append(f"# stage {name}: {len(batch)} task(s){together}")
        for task in batch:
            if task.notebook is None:
                flags = override_flags(given)
                lines.append(f"{cd}synthaug run -f {profile_arg}{flags} --stage {name}")
                continue
            out = cfg.paths.executed(task.name)
            partial = out.with_suffix(".running.ipynb")
            parameters = {**({"overrides": given} if given else {}), **task.parameters}
            lines.append(
                f"{cd}mkdir -p {shlex.quote(str(out.parent))} && "
                f"papermill --no-progress-bar notebooks/{task.notebook}.ipynb "
                f"{shlex.quote(str(partial))} -f {profile_arg}"
                + (f" -y {shlex.quote(json.dumps(parameters))}" if parameters else "")
                + f" && mv {shlex.quote(str(partial))} {shlex.quote(str(out))}"
            )
    return lines


def run_task(
    profile: str | Path,
    overrides: Mapping[str, Any] | None,
    name: str,
    rebuild: bool = False,
    echo: Callable[[str], None] = print,
) -> bool:
    """`synthaug task`: run the one task `name` of the study, in a fresh kernel whose
    output goes to this process's terminal (a cluster job's log), unless it is done
    (with `rebuild`, even then). Generation is split as `cluster.generation_shards` says.
    True if it ran."""
    read = load_profile(profile, overrides)
    sections, cfg = read.sections, read.cfg
    tasks = {task.name: task for task in list_tasks(cfg, shards=cfg.cluster.generation_shards)}
    if name not in tasks:
        raise ConfigError(
            f"study {cfg.name} has no task {name!r}; `synthaug run -f {profile} --dry-run` "
            "lists its tasks"
        )
    task = tasks[name]
    # shared: beside the cluster's other tasks of the study, never beside a local run
    with faults_in_one_line(cfg, [name]), study_lock(cfg.run_dir, shared=True):
        if task.is_done() and not rebuild:
            echo(f"{name}: done already")
            return False
        execute(task, cfg, sections)
    echo(f"{name}: done")
    return True


def run_study(
    profile: str | Path,
    overrides: Mapping[str, Any] | None = None,
    stage: str | None = None,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
    verbose: bool = False,
    rebuild: bool = False,
) -> list[Task]:
    """`synthaug run`: every task up to `stage` that is not done yet, in order, with the
    running stage's progress on one live line; at the end, the report and the answer.
    `rebuild` runs the notebooks of `stage` again even when done: each stage skips the
    work it finds done, so this redraws that stage's figures and tables from the run.
    The kernels' own output goes to `logs/kernels.log` unless `verbose`."""
    _check_rebuild(stage, rebuild)
    start = time.perf_counter()
    read = load_profile(profile, overrides)
    sections, cfg = read.sections, read.cfg
    if dry_run:
        return _dry_run(cfg, stage, rebuild, echo)
    running: list[str] = []
    with faults_in_one_line(cfg, running), study_lock(cfg.run_dir):
        check_design(cfg)
        tasks = list_tasks(cfg, stage)
        todo = _to_run(tasks, stage, rebuild)
        echo(_plan_line(cfg, tasks, todo))
        _run_todo(cfg, sections, todo, running, echo, verbose)
    summarize(cfg, stage, time.perf_counter() - start, echo)
    return todo


def _plan_line(cfg: StudyConfig, tasks: list[Task], todo: list[Task]) -> str:
    done = len(tasks) - len(todo)
    return f"study {cfg.name}: {len(tasks)} tasks, {done} done, {len(todo)} to run -> {cfg.run_dir}"


def _dry_run(
    cfg: StudyConfig, stage: str | None, rebuild: bool, echo: Callable[[str], None]
) -> list[Task]:
    """The plan, written nowhere: the data, the prompts, each task done or to run."""
    manifest = check_design(cfg, write=False)
    tasks = list_tasks(cfg, stage)
    todo = _to_run(tasks, stage, rebuild)
    echo(_plan_line(cfg, tasks, todo))
    echo(f"data: {data_line(cfg, manifest)}")
    echo("prompts (set dataset.class_words where a name does not read as words):")
    for line in prompt_lines(cfg, manifest.classes):
        echo(line)
    for task in tasks:
        status = "todo" if task in todo else "done"
        echo(f"  [{status}] {task.stage:9s} {task.name} {task.parameters or ''}")
    return todo


def _run_todo(
    cfg: StudyConfig,
    sections: Mapping[str, Any],
    todo: list[Task],
    running: list[str],
    echo: Callable[[str], None],
    verbose: bool,
) -> None:
    """Run the tasks, stage by stage, each stage's tasks on its workers; `running` names
    the tasks in flight (for the message if the run is stopped)."""
    write_config(cfg)
    kernel_log = None if verbose else cfg.paths.kernel_log
    os.environ[STATUS_ENV] = str(cfg.paths.status)  # the kernels report their progress there
    with LiveStatus(cfg.paths.status, echo) as live:
        progress = StudyProgress(len(todo), live.say)

        def run_one(task: Task, kernel: WarmKernel) -> None:
            task_start = time.perf_counter()
            running.append(task.name)
            execute(task, cfg, sections, kernel, kernel_log)
            running.remove(task.name)
            progress.finished(task, time.perf_counter() - task_start)

        for stage in STAGE_NAMES:
            batch = [task for task in todo if task.stage == stage]
            devices = stage_devices(cfg, stage)
            if stage == "classify" and len(devices) > 1 and batch:
                _prepare_parallel_cells(cfg, batch, live.say)
            progress.begin_stage(len(batch))
            on_cpu = len(devices) > 1 and devices[0] is None
            with _threads_per_kernel(len(devices)) if on_cpu else nullcontext():
                _run_batch(batch, devices, run_one, cfg.study.reuse_kernels, kernel_log)


def summarize(
    cfg: StudyConfig, stage: str | None, seconds: float, echo: Callable[[str], None]
) -> None:
    """The end of a run: the time it took, the report's path and the study's answer."""

    echo(f"done in {clock(seconds)}")
    if cfg.paths.book_index.exists() and stage in (None, "book"):
        echo(f"report: {cfg.paths.book_index}")
    if stage in (None, "classify", "analysis", "book"):
        for line in headline(cfg):
            echo(f"  {line}")


def _run_batch(
    tasks: list[Task],
    devices: list[str | None],
    run_one: Callable[[Task, WarmKernel], None],
    reuse_kernels: bool,
    kernel_log: Path | None = None,
) -> None:
    """Run the tasks on one thread per entry of `devices`, each with its own kernel pinned
    to that device: one warm kernel for all its tasks, or a fresh one per task. The first
    failure stops the others from starting new tasks, and is raised once the tasks in
    flight have finished."""
    pending: queue.SimpleQueue[Task] = queue.SimpleQueue()
    for task in tasks:
        pending.put(task)
    failures: list[BaseException] = []

    def work(device: str | None) -> None:
        kernel = WarmKernel(log=kernel_log, device=device)
        try:
            while not failures:
                try:
                    task = pending.get_nowait()
                except queue.Empty:
                    return
                run_one(task, kernel)
                if not reuse_kernels:
                    kernel.shutdown()
                    kernel = WarmKernel(log=kernel_log, device=device)
        except BaseException as error:
            failures.append(error)
        finally:
            kernel.shutdown()

    if len(devices) == 1:
        work(devices[0])
    else:
        threads = [threading.Thread(target=work, args=(d,), daemon=True) for d in devices]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]


@dataclass
class StudyProgress:
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

    cells = [Cell(**{"arm": "lora", **t.parameters}) for t in tasks]
    seconds = CellRunner(cfg).warm_features(cells)
    echo(f"features of the images the cells draw cached in {seconds:.1f}s")
