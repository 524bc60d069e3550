"""`synthaug run --executor slurm`: the study as SLURM jobs, one job array per stage.

Each stage's tasks still to do become one array (`sbatch --array`), whose task i runs
`synthaug task` for the stage's i-th task; each stage waits for the ones before it with
`--dependency=afterok` (and is cancelled if one of them fails), so the user can log out.
The submission is recorded in `logs/slurm/submission.json`; `follow` and `status` read
every task's state from `squeue`, then `sacct`, then the run folder itself (a cluster
without accounting). sbatch, squeue and sacct are called directly: the stages are shell
commands, and afterok chains survive the submitting process, which a Python-side
scheduler client (submitit's futures) would have to stay alive for.
"""

from __future__ import annotations

import getpass
import json
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from synthaug.config import StudyConfig, load_config
from synthaug.io import atomic_write_text, read_json, write_json
from synthaug.machinery.lock import study_lock
from synthaug.machinery.stages import STAGE_NAMES, Task, list_tasks
from synthaug.machinery.study import StudyError, prepare_tasks, summarize
from synthaug.paths import project_root, resolve_path

ACTIVE = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
}
COMPLETED = "COMPLETED"
NOT_RUN = "CANCELLED"  # what afterok's --kill-on-invalid-dep makes of a later stage
SHOWN = ("pending", "running", "done", "failed", "cancelled")


@dataclass
class StageJob:
    """One stage's job array: task i of job `job_id` runs `tasks[i]`."""

    stage: str
    job_id: str
    tasks: list[str]
    log: str  # the log of task i: log.replace("%a", str(i))

    def key(self, index: int) -> str:
        return f"{self.job_id}_{index}"

    def log_of(self, index: int) -> str:
        return self.log.replace("%A", self.job_id).replace("%a", str(index))


def job_name(cfg: StudyConfig, stage: str) -> str:
    """What squeue and scancel know a stage by: `synthaug-<study>-<stage>`."""
    return f"synthaug-{cfg.name}-{stage}"


def _slurm(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a SLURM client command; a missing one or a refusal is a `StudyError`."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise StudyError(
            f"{command[0]} not found: --executor slurm submits from a SLURM cluster's login "
            "node; elsewhere use --executor local (the default)"
        ) from None
    if check and done.returncode != 0:
        raise StudyError(f"{' '.join(command[:2])} ... failed: {done.stderr.strip()}")
    return done


# --- submitting ---------------------------------------------------------------------


def submit(
    cfg: StudyConfig,
    profile: Path,
    overrides: Mapping[str, Any],
    todo: list[Task],
    rebuild: bool = False,
) -> list[StageJob]:
    """Submit the tasks to do as one array per stage, each after the stages before it;
    write the scripts and the submission record under `logs/slurm/`. If sbatch refuses a
    stage, the stages already queued are cancelled: all or nothing is submitted."""
    cfg.paths.slurm.mkdir(parents=True, exist_ok=True)
    jobs: list[StageJob] = []
    for stage in STAGE_NAMES:
        names = [task.name for task in todo if task.stage == stage]
        if not names:
            continue
        script = cfg.paths.slurm / f"{stage}.sh"
        atomic_write_text(script, job_script(cfg, profile, overrides, stage, names, rebuild))
        log = str(cfg.paths.slurm / f"{stage}-%A_%a.out")
        after = [job.job_id for job in jobs]
        command = sbatch_command(cfg, stage, len(names), log, after) + [str(script)]
        try:
            job_id = _slurm(*command).stdout.strip().split(";")[0]
        except StudyError as error:  # e.g. a stage's partition refused: none half-queued
            _slurm("scancel", *(job.job_id for job in jobs), check=False)
            raise StudyError(f"{error}\nnothing of study {cfg.name} was left queued") from None
        jobs.append(StageJob(stage, job_id, names, log))
    write_json(
        cfg.paths.slurm / "submission.json",
        {"submitted": time.time(), "jobs": [asdict(job) for job in jobs]},
    )
    return jobs


def sbatch_command(
    cfg: StudyConfig, stage: str, tasks: int, log: str, after: list[str]
) -> list[str]:
    """sbatch's arguments for one stage's array: the stage's resources from `cluster:`,
    its log path, and afterok on the stages submitted before it."""
    cluster, needs = cfg.cluster, cfg.cluster.resources(stage)
    throttle = f"%{cluster.max_parallel}" if cluster.max_parallel else ""
    command = [
        "sbatch",
        "--parsable",
        f"--job-name={job_name(cfg, stage)}",
        f"--array=0-{tasks - 1}{throttle}",
        f"--output={log}",
        f"--chdir={project_root()}",
        f"--cpus-per-task={needs.cpus}",
    ]
    if needs.gpus:
        command.append(f"--gres=gpu:{needs.gpus}")
    for option, value in (
        ("mem", needs.mem),
        ("time", needs.time),
        ("partition", needs.partition or cluster.partition),
        ("account", cluster.account),
    ):
        if value:
            command.append(f"--{option}={value}")
    if after:
        command += [f"--dependency=afterok:{':'.join(after)}", "--kill-on-invalid-dep=yes"]
    return command + cluster.sbatch_options + needs.sbatch_options


def job_script(
    cfg: StudyConfig,
    profile: Path,
    overrides: Mapping[str, Any],
    stage: str,
    names: list[str],
    rebuild: bool = False,
) -> str:
    """The batch script of one stage: array task i runs `synthaug task` on names[i], in
    this Python environment, with as many threads as it was given cores."""

    flags = "".join(
        f" -p {shlex.quote(k)} {shlex.quote(json.dumps(v))}" for k, v in overrides.items()
    )
    task = (
        f"{shlex.quote(sys.executable)} -m synthaug.machinery.cli task"
        f" -f {shlex.quote(str(profile))}"
        f"{flags}{' --rebuild' if rebuild else ''}"
    )
    listed = "\n".join(f"    {shlex.quote(name)}" for name in names)
    return "\n".join(
        [
            "#!/bin/bash",
            f"# synthaug study {cfg.name}, stage {stage}: array task i runs tasks[i]",
            "set -euo pipefail",
            f"tasks=(\n{listed}\n)",
            *cfg.cluster.setup,
            'export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"',
            f'exec {task} --name "${{tasks[$SLURM_ARRAY_TASK_ID]}}"',
            "",
        ]
    )


# --- following ----------------------------------------------------------------------


def read_submission(cfg: StudyConfig) -> list[StageJob] | None:
    path = cfg.paths.slurm / "submission.json"
    if not path.exists():
        return None
    return [StageJob(**job) for job in read_json(path)["jobs"]]


def _queued(cfg: StudyConfig) -> dict[str, str]:
    """State of each array task of this study the controller still holds: `id_i` -> state."""
    names = ",".join(job_name(cfg, stage) for stage in STAGE_NAMES)
    out = _slurm(
        "squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-n", names, "-o", "%i|%T"
    )
    return dict(line.split("|", 1) for line in out.stdout.split())


def _accounted(jobs: list[StageJob]) -> dict[str, str] | None:
    """State of each array task in the accounting database, or None without accounting."""
    ids = ",".join(job.job_id for job in jobs)
    done = _slurm("sacct", "-n", "-P", "-X", "-j", ids, "-o", "JobID,State", check=False)
    if done.returncode != 0:
        return None
    states = {}
    for line in done.stdout.splitlines():
        key, state = line.split("|", 1)
        for task in _array_tasks(key):
            states[task] = state.split()[0]  # "CANCELLED by 0" -> CANCELLED
    return states


def _array_tasks(key: str) -> list[str]:
    """sacct's `12_[0-3,7%2]` (an array's tasks not started yet) as `12_0` ... `12_7`."""
    job, _, indices = key.partition("_[")
    if not indices:
        return [key]
    tasks = []
    for part in indices.rstrip("]").split("%")[0].split(","):
        first, _, last = part.partition("-")
        tasks += [f"{job}_{i}" for i in range(int(first), int(last or first) + 1)]
    return tasks


def task_states(cfg: StudyConfig, jobs: list[StageJob]) -> dict[str, str]:
    """Each submitted task's SLURM state, from squeue, else sacct, else (no accounting)
    from the run folder: COMPLETED if its outputs are there, else FAILED."""
    queued, accounted = _queued(cfg), _accounted(jobs)
    local: dict[str, Task] = {}
    states = {}
    for job in jobs:
        for index, name in enumerate(job.tasks):
            key = job.key(index)
            state = queued.get(key) or (accounted or {}).get(key)
            if state is None:
                if not local:
                    local.update((t.name, t) for t in _tasks(cfg))
                state = COMPLETED if name in local and local[name].is_done() else "FAILED"
            states[name] = state
    return states


def _tasks(cfg: StudyConfig) -> list[Task]:
    return list_tasks(cfg, shards=cfg.cluster.generation_shards)


def kind(state: str) -> str:
    """One of SHOWN: how the live counts group SLURM's states."""
    if state == "PENDING" or state.startswith("REQUEUE"):
        return "pending"
    if state in ACTIVE:
        return "running"
    if state == COMPLETED:
        return "done"
    return "cancelled" if state == NOT_RUN else "failed"


def counts(job: StageJob, states: Mapping[str, str]) -> str:
    """`29 pending, 3 running, 12 done` for one stage's tasks."""
    tally = Counter(kind(states[name]) for name in job.tasks)
    return ", ".join(f"{tally[k]} {k}" for k in SHOWN if tally[k])


def count_lines(jobs: list[StageJob], states: Mapping[str, str]) -> list[str]:
    """`classify (job 14, 44 tasks): 29 pending, 3 running, 12 done` per stage."""
    return [
        f"{job.stage} (job {job.job_id}, {tasks(len(job.tasks))}): {counts(job, states)}"
        for job in jobs
    ]


def tasks(count: int) -> str:
    """`1 task`, `4 tasks`."""
    return f"{count} task{'s' * (count != 1)}"


def is_active(states: Mapping[str, str]) -> bool:
    return any(state in ACTIVE for state in states.values())


def failures(cfg: StudyConfig, jobs: list[StageJob], states: Mapping[str, str]) -> list[str]:
    """A line per failed task (its name, state, failing cell and log), one per stage
    cancelled because a stage before it failed, and what to do next."""
    lines = []
    for job in jobs:
        cancelled = 0
        for index, name in enumerate(job.tasks):
            state = states[name]
            if kind(state) == "cancelled":
                cancelled += 1
            elif kind(state) == "failed":
                log = Path(job.log_of(index))
                shown = log.relative_to(cfg.run_dir) if log.is_relative_to(cfg.run_dir) else log
                lines.append(f"{name} {state}: {_reason(log)}\n    log: {cfg.run_dir / shown}")
        if cancelled:
            lines.append(f"{job.stage}: {tasks(cancelled)} cancelled (an earlier task failed)")
    if lines:
        lines.append(
            "finished tasks are kept; fix the cause and run the same command again: it "
            "submits only what is missing or failed"
        )
    return lines


def _reason(log: Path) -> str:
    """The failing notebook and cell from `synthaug task`'s error line, else the log's
    last line (e.g. SLURM's 'CANCELLED ... DUE TO TIME LIMIT')."""
    if not log.exists():
        return f"no log at {log}"
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in lines:
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    return lines[-1] if lines else "the log is empty"


def follow(
    cfg: StudyConfig,
    jobs: list[StageJob],
    echo: Callable[[str], None],
    poll: float | None = None,
) -> dict[str, str]:
    """Print the counts whenever they change until no task is pending or running; a
    failed or cancelled task is then a `StudyError` that names each and its log."""
    shown = ""
    while True:
        states = task_states(cfg, jobs)
        line = " · ".join(f"{job.stage} {counts(job, states)}" for job in jobs)
        if line != shown:
            echo(line)
            shown = line
        if not is_active(states):
            break
        time.sleep(poll or cfg.cluster.poll_seconds)
    problems = failures(cfg, jobs, states)
    if problems:
        raise StudyError(f"study {cfg.name} on the cluster:\n  " + "\n  ".join(problems))
    return states


def status_lines(cfg: StudyConfig) -> list[str]:
    """`synthaug status`: the submitted stages' counts (and failures), or, if the study
    was never submitted, how many of each stage's tasks are done."""
    jobs = read_submission(cfg)
    if jobs is None:
        tasks = _tasks(cfg)
        lines = [f"study {cfg.name}: not submitted to a cluster; tasks done per stage:"]
        for stage in STAGE_NAMES:
            mine = [task for task in tasks if task.stage == stage]
            lines.append(f"  {stage}: {sum(t.is_done() for t in mine)}/{len(mine)}")
        return lines
    states = task_states(cfg, jobs)
    where = "running on" if is_active(states) else "finished on"
    lines = [f"study {cfg.name}, {where} the cluster:"]
    lines += [f"  {line}" for line in count_lines(jobs, states)]
    if not is_active(states):
        lines += [f"  {line}" for line in failures(cfg, jobs, states)]
    return lines


def run_on_cluster(
    profile: str | Path,
    overrides: Mapping[str, Any] | None = None,
    stage: str | None = None,
    rebuild: bool = False,
    echo: Callable[[str], None] = print,
    poll: float | None = None,
) -> list[StageJob]:
    """`synthaug run --executor slurm`: submit what is missing or failed (nothing while
    an earlier submission of the study still runs: that one is followed instead), then
    follow it to the end; Ctrl-C stops only the following."""
    start = time.perf_counter()
    cfg = load_config(profile, overrides)
    with study_lock(cfg.run_dir, shared=True):  # beside its own tasks, never a local run
        jobs = read_submission(cfg)
        if jobs and is_active(task_states(cfg, jobs)):
            echo(f"study {cfg.name} is already on the cluster; following it")
        else:
            shards = cfg.cluster.generation_shards
            cfg, given, todo = prepare_tasks(profile, overrides, stage, rebuild, shards)
            if not todo:
                echo(f"study {cfg.name}: every task is done -> {cfg.run_dir}")
                return []
            jobs = submit(cfg, resolve_path(profile), given, todo, rebuild)
            arrays = ", ".join(f"{job.stage} {job.job_id}" for job in jobs)
            echo(
                f"study {cfg.name}: {len(todo)} tasks submitted as job arrays {arrays}; logs "
                f"in {cfg.paths.slurm}. It runs without this shell: `synthaug status -f "
                f"{profile}` shows it from any other, `scancel --name="
                f"{job_name(cfg, '<stage>')}` cancels"
            )
        try:
            follow(cfg, jobs, echo, poll)
        except KeyboardInterrupt:
            echo(f"stopped following; the study goes on: `synthaug status -f {profile}`")
            return jobs
    summarize(cfg, stage, time.perf_counter() - start, echo)
    return jobs


def refuse_if_running(cfg: StudyConfig) -> None:
    """A local run of a study that is running on the cluster is a `StudyError`."""
    jobs = read_submission(cfg)
    if jobs is None:
        return
    try:
        running = is_active(task_states(cfg, jobs))
    except StudyError:  # no SLURM here: the submission is from another machine's run
        return
    if running:
        raise StudyError(
            f"study {cfg.name} is running on the cluster (synthaug status -f <profile>); "
            "wait for it, or cancel it with scancel --name=synthaug-"
            f"{cfg.name}-<stage>, before running it here"
        )
