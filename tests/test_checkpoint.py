"""LoRA checkpoints hold data only: safetensors with a JSON header, never a pickle."""

import math

import pytest
import torch
from safetensors.torch import load_file

from synthaug.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from synthaug.lora import CHECKPOINT, train_lora

from .conftest import smoke_config


def test_a_state_dict_comes_back_exactly(tmp_path) -> None:
    state = {
        "optimizer": {
            "state": {0: {"step": 3, "exp_avg": torch.randn(4, 2)}, 1: {"s": torch.ones(2)}},
            "param_groups": [{"betas": (0.9, 0.999), "growth_rate": math.inf, "beta3": None}],
        },
        "losses": [[1, 1, 0.1 + 0.2, 4]],
        "step": 7,
    }
    save_checkpoint(tmp_path / "c.safetensors", state)
    back = load_checkpoint(tmp_path / "c.safetensors")
    assert back["step"] == 7 and back["losses"] == state["losses"]  # floats exact
    group = back["optimizer"]["param_groups"][0]
    assert group == {"betas": (0.9, 0.999), "growth_rate": math.inf, "beta3": None}
    assert set(back["optimizer"]["state"]) == {0, 1}  # integer keys stay integers
    assert torch.equal(
        back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"]
    )


def test_an_older_pickled_checkpoint_is_converted_and_resumes_the_same_lora(
    tmp_path, ucmerced
) -> None:
    whole = smoke_config(tmp_path / "whole")
    train_lora(whole)
    older = smoke_config(tmp_path / "older")
    train_lora(older, stop_after=7)
    new = older.paths.lora / CHECKPOINT
    torch.save(load_checkpoint(new), older.paths.lora / "checkpoint.pt")  # the old format
    new.unlink()
    train_lora(older)
    assert not (older.paths.lora / "checkpoint.pt").exists()
    a, b = load_file(whole.paths.lora_weights), load_file(older.paths.lora_weights)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, ucmerced, capsys) -> None:
    cfg = smoke_config(tmp_path)
    cfg.paths.lora.mkdir(parents=True)
    torch.save({"step": _RunsCode()}, cfg.paths.lora / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"cannot be read safely.*delete it"):
        train_lora(cfg)
    assert "this must never run" not in capsys.readouterr().out
