"""Progress lines: few lines in a log, one live line in the runner, final state in a notebook."""

import io
import time

from synthaug.io import write_json
from synthaug.runtime.progress import LiveStatus, Progress, clock


def test_a_log_gets_a_line_per_tenth_not_per_step(capsys) -> None:
    with Progress(200, "LoRA", "steps") as progress:
        for step in range(200):
            progress.update(1, loss=f"{1 / (step + 1):.3f}")
    lines = capsys.readouterr().err.splitlines()
    assert 2 <= len(lines) <= 12 and "\r" not in "".join(lines)
    assert lines[-1].startswith("LoRA: 200/200 steps (100%) · loss 0.005 · ")


def test_the_time_left_comes_from_the_pace_so_far() -> None:
    progress = Progress(100, "generate", "images")
    progress.start -= 10  # 10 s for the first 25 images
    progress.update(25)
    assert "~0:30 left" in progress.line() and clock(3725) == "1:02:05"


def test_the_runner_relays_what_a_kernel_reports(tmp_path) -> None:
    stream, said = io.StringIO(), []
    with LiveStatus(tmp_path / ".status", said.append, stream=stream, every=0, poll=0.02) as live:
        write_json(tmp_path / ".status" / "123.json", {"line": "LoRA: 5/10 steps", "time": 1.0})
        time.sleep(0.2)
        live.say("[1/3] lora 01_lora: 5.0s")
    assert stream.getvalue() == "  LoRA: 5/10 steps\n"  # not a TTY: printed once, no \r
    assert said == ["[1/3] lora 01_lora: 5.0s"]
    assert not list((tmp_path / ".status").iterdir())  # cleared at the end
