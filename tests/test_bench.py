"""The benchmark scripts run (the GPU one with its tiny configs, on the CPU)."""

import json
import subprocess
import sys

from .conftest import ROOT


def test_gpu_script_runs_tiny_on_cpu() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "bench/gpu_flux.py",
            "--tiny",
            "--parts",
            "lora,generation,classifier,sweep",
            "--curve-steps",
            "100",
            "--warmup",
            "2",
            "--cell-images",
            "76",
            "--batches",
            "1,2",
            "--steps",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    payload = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert payload["lora_settings"] == {"rank": 16, "alpha": 16.0, "optimizer": "prodigy"}
    variants = payload["lora"]["variants"]
    assert [(v["optimizer"], v["compile"]) for v in variants] == [
        ("prodigy_reference", "none"),
        ("prodigy", "none"),
        ("prodigy", "regional"),
        ("prodigy", "regional-cudagraphs"),
    ]
    assert all(v["samples_per_s"] > 0 for v in variants)
    assert len(variants[0]["losses"]) == len(variants[2]["losses"]) == 100
    assert payload["lora"]["loss_window_gap_max"] < 0.02  # compiled trains the same curve
    generation = payload["generation"]
    assert generation["none"]["images_per_s"] > 0 and generation["regional"]["first_call_s"] > 0
    cell = payload["classifier"]
    assert set(cell["runs"]) == {
        "before_1_epochs",
        "first_1_epochs",
        "after_1_epochs",
        "after_2_epochs",
    }
    assert cell["projected_cell_s"]["before"] > 0 and cell["epochs"] == 10
    rows = payload["sweep"]
    assert [(r["checkpointing"], r["batch_size"]) for r in rows] == [
        (True, 1),
        (True, 2),
        (False, 1),
        (False, 2),
    ]
    projection = payload["projection"]
    assert set(projection["after"]) == {"lora_h", "generate_h", "classifier_h", "total_h"}
    assert projection["before"]["total_h"] > 0 and projection["after"]["total_h"] > 0


def test_gpu_script_measures_the_klein_family_tiny_on_cpu() -> None:
    result = subprocess.run(
        [sys.executable, "bench/gpu_flux.py", "--tiny", "--family", "flux2-klein"]
        + ["--steps", "3", "--warmup", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    payload = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert payload["family"] == "flux2-klein" and payload["profile"] == "paper-flux2-klein.yaml"
    assert payload["lora"]["samples_per_s"] > 0
    assert payload["sampling_step"]["passes_per_step"] == 2  # classifier-free guidance 4.0
