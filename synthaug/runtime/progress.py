"""Progress of a long loop, shown where its user is looking.

- In a Jupyter kernel: one text line updated in place (a display with a `display_id`), so
  JupyterLab shows it moving and the saved notebook keeps only its final state.
- In a terminal: one line rewritten in place; in a log file or CI (not a TTY): a line at
  every tenth of the way, so the log stays readable.
- Under `synthaug run`: the line is also written to the run's status folder (the
  `SYNTHAUG_STATUS_DIR` the runner sets for its kernels), from which the runner shows the
  running stage's progress in the terminal while its notebook executes.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from synthaug.io import read_json, write_json

STATUS_ENV = "SYNTHAUG_STATUS_DIR"
# Marks a progress display in a notebook (the report leaves these out).
MARK = {"synthaug": "progress"}


def clock(seconds: float) -> str:
    """`75` -> `1:15`, `3725` -> `1:02:05`."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _in_kernel() -> bool:
    try:
        # deferred: IPython exists only inside a notebook kernel
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class Progress:
    """`total` steps of `desc`, counted in `unit`; `update(n, **postfix)` after each."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "it",
        initial: int = 0,
        interval: float = 0.5,
        show: bool = True,
    ) -> None:
        self.total, self.desc, self.unit, self.show = total, desc, unit, show
        self.n, self.first = initial, initial
        self.postfix: dict[str, Any] = {}
        self.interval = interval
        self.start = time.perf_counter()
        self.shown_at = 0.0
        self.tenths_logged = -1
        self.kernel = show and _in_kernel()
        self.tty = not self.kernel and sys.stderr.isatty()
        status = os.environ.get(STATUS_ENV) if self.kernel else None
        self.status = Path(status) / f"{os.getpid()}.json" if status else None
        self.handle = None
        if self.kernel:
            # deferred: IPython exists only inside a notebook kernel
            from IPython.display import display

            self.handle = display(
                {"text/plain": self.line()}, raw=True, display_id=True, metadata=MARK
            )
        self._show(force=True)

    def line(self) -> str:
        """`LoRA: 120/789 steps (15%) · loss 0.512 · 0:31 elapsed, ~2:55 left`."""
        elapsed = time.perf_counter() - self.start
        done = self.n - self.first
        text = f"{self.desc}: {self.n}/{self.total} {self.unit}"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f}%)"
        text += "".join(f" · {key} {value}" for key, value in self.postfix.items())
        text += f" · {clock(elapsed)} elapsed"
        if done > 0 and self.n < self.total:
            text += f", ~{clock(elapsed / done * (self.total - self.n))} left"
        return text

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.n += n
        self.postfix.update(postfix)
        self._show(force=self.n >= self.total)

    def close(self) -> None:
        self._show(force=True)
        if self.tty and self.show:
            sys.stderr.write("\n")
        if self.status is not None:
            self.status.unlink(missing_ok=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _show(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.show or (not force and now - self.shown_at < self.interval):
            return
        self.shown_at = now
        line = self.line()
        if self.handle is not None:
            self.handle.update({"text/plain": line}, raw=True, metadata=MARK)
        elif self.tty:
            sys.stderr.write(f"\r\x1b[K{line}")
            sys.stderr.flush()
        else:
            tenths = int(10 * self.n / self.total) if self.total else 10
            if tenths > self.tenths_logged:
                self.tenths_logged = tenths
                print(line, file=sys.stderr, flush=True)
        if self.status is not None:
            write_json(self.status, {"line": line, "time": time.time()})


def read_status(folder: Path) -> list[str]:
    """The progress lines the run's processes last wrote, newest first."""
    entries = []
    for path in folder.glob("*.json"):
        try:
            entries.append(read_json(path))
        except (OSError, ValueError):  # being replaced right now
            continue
    return [e["line"] for e in sorted(entries, key=lambda e: -e["time"])]


def clear_status(folder: Path) -> None:
    for path in folder.glob("*.json"):
        path.unlink(missing_ok=True)


class LiveStatus:
    """The runner's view of the notebooks it runs: their latest `Progress` lines (from the
    status folder), as one line rewritten in place on a terminal, or, in a log, printed
    when it changes and at most every `every` seconds. `say` prints a lasting line above."""

    def __init__(
        self,
        folder: Path,
        echo: Callable[[str], None],
        stream: TextIO | None = None,
        every: float = 30.0,
        poll: float = 0.5,
    ) -> None:
        self.folder, self.echo, self.every, self.poll = folder, echo, every, poll
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.shown = self.logged = ""
        self.printed_at = 0.0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> LiveStatus:
        self.folder.mkdir(parents=True, exist_ok=True)
        clear_status(self.folder)
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopped.set()
        self.thread.join()
        with self.lock:
            self._erase()
        clear_status(self.folder)

    def say(self, text: str) -> None:
        with self.lock:
            self._erase()
            self.echo(text)
            self.shown = " | ".join(read_status(self.folder)[:2])
            self._draw(self.shown)

    def _loop(self) -> None:
        while not self.stopped.wait(self.poll):
            current = " | ".join(read_status(self.folder)[:2])
            with self.lock:
                due = time.monotonic() - self.printed_at >= self.every
                if self.tty:
                    self._draw(current)
                elif current and current != self.logged and due:
                    print(f"  {current}", file=self.stream, flush=True)
                    self.printed_at, self.logged = time.monotonic(), current
                self.shown = current

    def _draw(self, line: str) -> None:
        if self.tty and line:
            width = shutil.get_terminal_size().columns - 3
            self.stream.write(f"\r\x1b[K  {line[:width]}")
            self.stream.flush()

    def _erase(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
