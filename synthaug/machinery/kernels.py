"""Warm kernels: papermill runs many notebooks in one Jupyter kernel per worker.

A fresh kernel spends seconds starting and importing torch, matplotlib and synthaug,
while a linear-probe cell of the CPU profile trains for about one second. A warm kernel
pays the start-up once per worker. Before each notebook its namespace is cleared, its
figures closed and its execution count reset, so each executed notebook reads as if it
ran in a fresh kernel; its results are the same (tested). `study.reuse_kernels: false`
gives every notebook a fresh kernel instead.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.log import logger

ENGINE = "synthaug-warm-kernel"
START_ATTEMPTS = 3  # a kernel that dies at start-up is started again, this many times in all
START_TIMEOUT_S = 60  # papermill's default start-up timeout
LOG_TAIL_LINES = 20  # of the kernel's log, in the error when it never started

log = logging.getLogger(__name__)
# One kernel of this process starts at a time, until it replies: jupyter_client picks a
# kernel's ports by binding and releasing them, so two kernels started at once by two
# workers' threads could be handed the same free port.
_STARTING = threading.Lock()
_LIVE: weakref.WeakSet[WarmKernel] = weakref.WeakSet()  # kernels started and not shut down

# Run silently before each notebook: what the previous notebook left behind goes, and the
# counts restart at 1 in a new history session (IPython's history refuses a line number
# twice in one session, and says so in the next notebook's output).
FRESH_NAMESPACE = """\
get_ipython().reset(new_session=True)
if "matplotlib.pyplot" in __import__("sys").modules:
    __import__("matplotlib.pyplot").pyplot.close("all")
__import__("gc").collect()
"""


class KernelStartError(RuntimeError):
    """The kernel died while starting, every time it was started."""


class KernelResetError(RuntimeError):
    """The warm kernel could not be cleared before the next notebook."""


class _FreshNamespaceClient(PapermillNotebookClient):
    def papermill_execute_cells(self) -> None:
        reply = self.wait_for_reply(
            self.kc.execute(FRESH_NAMESPACE, silent=True, store_history=False)
        )
        if reply is None or reply["content"]["status"] != "ok":
            raise KernelResetError(f"clearing the warm kernel failed: {reply}")
        super().papermill_execute_cells()


class WarmKernelEngine(NBClientEngine):
    """papermill's nbclient engine on a kernel that outlives the notebook (`km=`)."""

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man,
        kernel_name: str,
        log_output: bool = False,
        stdout_file=None,
        stderr_file=None,
        start_timeout: int = 60,
        execution_timeout: int | None = None,
        km: AsyncKernelManager | None = None,
        **_unused: Any,
    ):
        client = _FreshNamespaceClient(
            nb_man,
            km=km,
            kernel_name=kernel_name,
            timeout=execution_timeout,
            startup_timeout=start_timeout,
            log=logger,
            log_output=log_output,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
        )
        try:
            return client.execute()
        finally:
            if client.kc is not None:
                client.kc.stop_channels()


papermill_engines.register(ENGINE, WarmKernelEngine)


def kill_all() -> None:
    """Kill every kernel process this process started that still runs: on Ctrl-C, now,
    not when their cells end, and none is left behind."""
    for kernel in list(_LIVE):
        process = getattr(kernel.manager.provisioner, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
    _LIVE.clear()


class WarmKernel:
    """One kernel for the notebooks a worker runs; started on first use. Use it from the
    thread that created it (its event loop is that thread's).

    The kernel process's own output (its start-up notices, anything written straight to
    its file descriptors) goes to `log` when given, else to this process's terminal; what
    the notebooks print goes into the notebooks either way."""

    def __init__(
        self, kernel_name: str = "python3", log: Path | None = None, device: str | None = None
    ) -> None:
        self.manager = AsyncKernelManager(kernel_name=kernel_name)
        self.log = log
        self.device = device

    def papermill_kwargs(self) -> dict[str, Any]:
        if not self.manager.has_kernel:
            self._start()
        return {"engine_name": ENGINE, "km": self.manager}

    def _start(self) -> None:
        """Start the kernel and wait for its first reply. A kernel that dies while starting
        ran nothing, so it is started again, on new ports: the ports a kernel is given are
        free when chosen but another process can take one before the kernel binds it
        (jupyter_client's own caveat), which kills the kernel at start-up."""
        with _STARTING:
            for attempt in range(1, START_ATTEMPTS + 1):
                self._launch()
                if self._replies():
                    return
                run_sync(self.manager.shutdown_kernel)(now=True)
                self.manager = AsyncKernelManager(kernel_name=self.manager.kernel_name)
                if attempt < START_ATTEMPTS:
                    log.warning(
                        "the kernel died while starting (attempt %d): starting it again", attempt
                    )
        raise KernelStartError(self._start_failure())

    def _launch(self) -> None:
        """Launch the kernel process; pinned to GPU `device` (it sees that GPU alone) when
        given."""
        options: dict[str, Any] = {}
        if self.device is not None:
            options["env"] = {**os.environ, "CUDA_VISIBLE_DEVICES": self.device}
        _LIVE.add(self)
        if self.log is None:
            run_sync(self.manager.start_kernel)(**options)
            return
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as handle:  # the kernel keeps its own copy of the handle
            run_sync(self.manager.start_kernel)(stdout=handle, stderr=handle, **options)

    def _replies(self) -> bool:
        """Whether the kernel answers its first request, False if it died first. A kernel
        that is alive but silent past the timeout raises jupyter_client's error."""
        client = self.manager.client()
        client.start_channels()
        try:
            run_sync(client.wait_for_ready)(timeout=START_TIMEOUT_S)
            return True
        except RuntimeError:
            if run_sync(self.manager.is_alive)():
                raise
            return False
        finally:
            client.stop_channels()

    def _start_failure(self) -> str:
        """What the error says when every start failed: the kernel's last words and the fix."""
        name = self.manager.kernel_name
        where = "above"
        if self.log is not None:
            tail = self.log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            where = f"in {self.log}, which ends:\n" + "\n".join(f"    {line}" for line in tail)
        return (
            f"the Jupyter kernel {name!r} died while starting, {START_ATTEMPTS} times; its "
            f"output is {where}\nCheck that this environment's kernel starts: `jupyter "
            f"kernelspec list` names the kernel {name!r} runs, and `python -m ipykernel_launcher "
            "--help` must run in the same environment as synthaug"
        )

    def shutdown(self) -> None:
        if self.manager.has_kernel:
            run_sync(self.manager.shutdown_kernel)(now=True)
        _LIVE.discard(self)
