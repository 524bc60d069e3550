"""One writer per study folder: an OS lock on `<run>/.lock`, held for a whole command.

`synthaug run` and `export` hold it alone (exclusive); the tasks a cluster runs side by
side (`synthaug task`, one per cell, and the submitting `run --executor slurm`) hold it
together (shared), so a local run cannot start beside them, nor they beside it. The OS
releases the lock when its process ends, however it ends (kill -9 included), so a stopped
run never blocks the next. Who holds it is written to `<run>/.lock.json` for the message
another command prints.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from synthaug.io import read_json, write_json

log = logging.getLogger(__name__)
UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class StudyBusy(RuntimeError):
    """Another process holds the study folder."""


def _holder(run_dir: Path) -> str:
    try:
        who = read_json(run_dir / ".lock.json")
    except (OSError, ValueError):
        return "another process"
    return f"pid {who['pid']} on {who['host']} since {who['since']} ({who['command']})"


@contextmanager
def study_lock(run_dir: Path, shared: bool = False, create: bool = True) -> Iterator[None]:
    """Hold `run_dir` for the block (with `shared`, beside other shared holders), or raise
    `StudyBusy` at once naming the holder. Where the file system has no locks (some
    cluster file systems), warn and go on unguarded. Without `create`, a folder that does
    not exist is not made (nothing there to guard)."""
    if not create and not run_dir.is_dir():
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a")  # noqa: SIM115 (held until the block ends)
    try:
        fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StudyBusy(
            f"{run_dir} is in use by {_holder(run_dir)}: wait for it to finish, or stop it "
            "(a stopped run lets go of the folder by itself), then run the same command again"
        ) from None
    except OSError as error:
        if error.errno not in UNSUPPORTED:
            handle.close()
            raise
        log.warning("%s: the file system has no locks; a second run there is not stopped", run_dir)
    try:
        write_json(
            run_dir / ".lock.json",
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": " ".join(["synthaug", *sys.argv[1:]])[:200],
            },
        )
        yield
    finally:
        handle.close()  # closing the file releases the lock
