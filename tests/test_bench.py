"""The benchmark scripts run (the GPU one with its tiny config, on the CPU)."""

import json
import subprocess
import sys

from .conftest import ROOT


def test_gpu_script_runs_tiny_on_cpu(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "bench/gpu_flux.py", "--tiny", "--batches", "1,2", "--steps", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    payload = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert [row["batch_size"] for row in payload["lora"]] == [1, 2]
    assert payload["lora"][0]["samples_per_s"] > 0
    assert payload["projection"]["lora_h"] > 0 and payload["projection"]["classifier_cells"] == 48
