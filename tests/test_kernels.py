"""Warm kernels: notebooks share a kernel process but never each other's state."""

import time

import nbformat
import papermill
import pytest

from synthaug.machinery.kernels import WarmKernel
from synthaug.machinery.study import Task, _run_batch


def _notebook(path) -> None:
    parameters = nbformat.v4.new_code_cell("value = 0")
    parameters.metadata["tags"] = ["parameters"]
    cells = [
        parameters,
        nbformat.v4.new_code_cell(
            'assert "leftover" not in globals(), "the previous notebook leaked"\n'
            "import os\n"
            "leftover = value\n"
            "print(os.getpid(), value, flush=True)"
        ),
    ]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), path)


def _streams(path) -> str:
    """Everything the notebook's cells printed."""
    cells = nbformat.read(path, as_version=4).cells
    return "".join(o.get("text", "") for cell in cells for o in cell.get("outputs", []))


def _printed(path) -> tuple[list[int], list[int]]:
    """What the last cell printed, and the execution counts of the code cells."""
    cells = nbformat.read(path, as_version=4).cells
    counts = [cell.execution_count for cell in cells if cell.cell_type == "code"]
    return [int(x) for x in cells[-1].outputs[0]["text"].split()], counts


def test_one_kernel_runs_notebooks_each_in_a_fresh_namespace(tmp_path) -> None:
    _notebook(tmp_path / "in.ipynb")
    kernel = WarmKernel()
    try:
        for value in (1, 2):
            papermill.execute_notebook(
                tmp_path / "in.ipynb",
                tmp_path / f"out{value}.ipynb",
                parameters={"value": value},
                progress_bar=False,
                **kernel.papermill_kwargs(),
            )
    finally:
        kernel.shutdown()
    (first, counts1), (second, counts2) = (_printed(tmp_path / f"out{v}.ipynb") for v in (1, 2))
    assert first[0] == second[0]  # the same kernel process ran both
    assert (first[1], second[1]) == (1, 2)
    assert counts1 == counts2 == [1, 2, 3]  # parameters, injected parameters, the cell
    # IPython's history opens a new session with the counts (no "ERROR! Session/line
    # number was not unique in database" in the second notebook's report page)
    assert "ERROR" not in _streams(tmp_path / "out2.ipynb")
    assert not kernel.manager.has_kernel


def test_first_failure_stops_the_batch(tmp_path) -> None:
    started: list[str] = []

    def run_one(task: Task, kernel) -> None:
        assert not kernel.manager.has_kernel  # started by papermill only, on first use
        started.append(task.name)
        time.sleep(0.05)
        if task.name == "b":
            raise RuntimeError("b failed")

    tasks = [Task("classify", name, None) for name in "abcdef"]
    with pytest.raises(RuntimeError, match="b failed"):
        _run_batch(tasks, [None], run_one, reuse_kernels=False)
    assert started == ["a", "b"]
    started.clear()
    with pytest.raises(RuntimeError, match="b failed"):
        _run_batch(tasks, [None, None], run_one, reuse_kernels=False)
    assert "b" in started and len(started) < len(tasks)


def test_the_papermill_internals_the_warm_engine_relies_on_are_there() -> None:
    """`synthaug.machinery.kernels` overrides `PapermillNotebookClient.papermill_execute_cells` and
    replaces `NBClientEngine.execute_managed_notebook`: if a papermill release renames or
    reshapes either, this fails before any study runs with a kernel that is never cleared."""
    import inspect

    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine

    from synthaug.machinery.kernels import WarmKernelEngine

    assert "self.papermill_execute_cells()" in inspect.getsource(PapermillNotebookClient.execute)
    assert "km" in inspect.signature(PapermillNotebookClient.__init__).parameters
    theirs = inspect.signature(NBClientEngine.execute_managed_notebook).parameters
    ours = inspect.signature(WarmKernelEngine.execute_managed_notebook).parameters
    assert [p for p in theirs if p != "kwargs"] == [p for p in ours if p not in ("km", "_unused")]


def test_a_kernel_pinned_to_a_device_sees_that_gpu_alone(tmp_path) -> None:
    """One kernel per GPU: its process starts with `CUDA_VISIBLE_DEVICES` set to its GPU."""
    cell = nbformat.v4.new_code_cell('import os; print(os.environ.get("CUDA_VISIBLE_DEVICES"))')
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(
        nbformat.v4.new_notebook(cells=[cell], metadata={"kernelspec": kernelspec}),
        tmp_path / "in.ipynb",
    )
    kernel = WarmKernel(device="3", log=tmp_path / "kernel.log")
    try:
        papermill.execute_notebook(
            tmp_path / "in.ipynb",
            tmp_path / "out.ipynb",
            progress_bar=False,
            **kernel.papermill_kwargs(),
        )
    finally:
        kernel.shutdown()
    printed = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].outputs[0]["text"]
    assert printed.strip() == "3"
    assert "Kernel" in (tmp_path / "kernel.log").read_text()  # its own notices went to the log


def _kernelspec(share, name: str, dies: int) -> None:
    """A kernel `name` under the Jupyter data folder `share` that dies at start-up its first
    `dies` times (as one does when another process takes its port) and then starts."""
    import json
    import sys

    folder = share / "kernels" / name
    folder.mkdir(parents=True)
    launcher = folder / "launch.py"
    launcher.write_text(
        "import pathlib, sys\n"
        f"starts = pathlib.Path({str(folder / 'starts')!r})\n"
        "count = int(starts.read_text()) if starts.exists() else 0\n"
        "starts.write_text(str(count + 1))\n"
        f"if count < {dies}:\n"
        "    sys.exit(f'start {count + 1}: zmq.error.ZMQError: Address already in use')\n"
        "from ipykernel import kernelapp\n"
        "kernelapp.launch_new_instance()\n"
    )
    argv = [sys.executable, str(launcher), "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": name, "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec))


def test_a_kernel_that_dies_while_starting_is_started_again(tmp_path, monkeypatch) -> None:
    """A kernel that dies before its first reply ran nothing: it is started again on new
    ports, and the notebook runs in the kernel that started."""
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share"))
    _kernelspec(tmp_path / "share", "flaky", dies=2)
    _notebook(tmp_path / "in.ipynb")
    kernel = WarmKernel(kernel_name="flaky", log=tmp_path / "kernel.log")
    try:
        papermill.execute_notebook(
            tmp_path / "in.ipynb",
            tmp_path / "out.ipynb",
            parameters={"value": 7},
            progress_bar=False,
            **kernel.papermill_kwargs(),
        )
    finally:
        kernel.shutdown()
    assert _printed(tmp_path / "out.ipynb")[0][1] == 7
    assert (tmp_path / "share/kernels/flaky/starts").read_text() == "3"
    died = (tmp_path / "kernel.log").read_text()
    assert "start 1: zmq.error" in died and "start 2: zmq.error" in died


def test_a_kernel_that_never_starts_stops_with_its_last_words(tmp_path, monkeypatch) -> None:
    from synthaug.machinery.kernels import START_ATTEMPTS, KernelStartError

    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share"))
    _kernelspec(tmp_path / "share", "broken", dies=99)
    kernel = WarmKernel(kernel_name="broken", log=tmp_path / "kernel.log")
    with pytest.raises(KernelStartError) as error:
        kernel.papermill_kwargs()
    message = str(error.value)
    assert f"'broken' died while starting, {START_ATTEMPTS} times" in message
    assert str(tmp_path / "kernel.log") in message
    assert f"start {START_ATTEMPTS}: zmq.error.ZMQError: Address already in use" in message
    assert "jupyter kernelspec list" in message
    assert not kernel.manager.has_kernel


def test_workers_start_their_kernels_one_at_a_time(tmp_path, monkeypatch) -> None:
    """Two workers' kernels start one after the other, each until it replies, so neither can
    be handed a port the other has been given but not bound yet."""
    import threading

    launch, replies = WarmKernel._launch, WarmKernel._replies
    starting: list[int] = []
    overlap: list[int] = []

    def counted_launch(self) -> None:
        starting.append(1)
        overlap.append(len(starting))
        time.sleep(0.5)  # a window in which the other worker would launch too
        launch(self)

    def counted_replies(self) -> bool:
        try:
            return replies(self)
        finally:
            starting.pop()

    monkeypatch.setattr(WarmKernel, "_launch", counted_launch)
    monkeypatch.setattr(WarmKernel, "_replies", counted_replies)
    started: list[bool] = []

    def worker() -> None:  # as `_run_batch`'s: its kernel made, started and shut down here
        kernel = WarmKernel(log=tmp_path / "kernel.log")
        try:
            kernel.papermill_kwargs()
            started.append(kernel.manager.has_kernel)
        finally:
            kernel.shutdown()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert started == [True, True]
    assert overlap == [1, 1]
