"""The benchmark scripts run (the GPU one with its tiny config, on the CPU)."""

import json
import subprocess
import sys

from .conftest import ROOT


def test_gpu_script_runs_tiny_on_cpu() -> None:
    result = subprocess.run(
        [sys.executable, "bench/gpu_flux.py", "--tiny", "--batches", "1,2", "--steps", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    payload = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    rows = payload["lora_steps"]
    assert [(r["checkpointing"], r["batch_size"]) for r in rows] == [
        (True, 1),
        (True, 2),
        (False, 1),
        (False, 2),
    ]
    assert all(r["samples_per_s"] > 0 and r["model_tflops_per_s"] > 0 for r in rows)
    assert payload["lora"] == {"rank": 16, "alpha": 16.0, "optimizer": "prodigy"}
    assert payload["lora_at_128_text_tokens"]["text_tokens"] == 4
    projection = payload["projection"]
    assert projection["lora_samples"] == 780 * 5 * 6  # the paper profile's LoRA
    assert projection["lora_h"] > 0 and projection["classifier_cells"] == 16 * 3
