"""synthaug.prodigy against prodigyopt 1.1.2: the same parameters, checkpoints that resume
across the two, and one host sync a step instead of two per tensor."""

from __future__ import annotations

import pytest
import torch
from prodigyopt import Prodigy as Reference
from safetensors.torch import load_file

from synthaug.lora import train_lora
from synthaug.prodigy import Prodigy

from .conftest import smoke_config

SETTINGS = [
    {},
    # the LoRA's own: bias correction, decoupled decay; and the safeguard of a warm-up
    {"use_bias_correction": True, "weight_decay": 0.01},
    {"use_bias_correction": True, "safeguard_warmup": True, "d_coef": 100.0},
    {"weight_decay": 0.1, "decouple": False, "betas": (0.0, 0.99)},
    {"slice_p": 3, "growth_rate": 1.02, "d_coef": 0.5},
]


def _model() -> torch.nn.Module:
    """A small net whose last layer starts at zero, as a LoRA's B matrices do."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    torch.nn.init.zeros_(net[2].weight)
    return net


def _batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 16, generator=generator), torch.randn(8, 4, generator=generator))
        for _ in range(count)
    ]


def _train(net: torch.nn.Module, optimizer: torch.optim.Optimizer, batches) -> None:
    for x, y in batches:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        optimizer.step()


def _relative_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(
        ((pa - pb).abs().max() / pa.abs().max()).item()
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True)
    )


@pytest.mark.parametrize("settings", SETTINGS)
def test_fifty_steps_give_prodigyopts_parameters(settings) -> None:
    batches = _batches(50)
    ours, theirs = _model(), _model()
    mine, reference = (
        Prodigy(ours.parameters(), **settings),
        Reference(theirs.parameters(), **settings),
    )
    _train(ours, mine, batches)
    _train(theirs, reference, batches)
    assert _relative_gap(ours, theirs) <= 1e-6
    assert mine.param_groups[0]["d"] == pytest.approx(reference.param_groups[0]["d"], rel=1e-6)
    assert mine.param_groups[0]["d"] > mine.param_groups[0]["d0"]  # d adapted: a real test


@pytest.mark.parametrize("settings", SETTINGS)
def test_the_gpus_foreach_updates_give_prodigyopts_parameters(settings, monkeypatch) -> None:
    """The foreach path a GPU takes, run here on the CPU."""
    monkeypatch.setattr("synthaug.prodigy.uses_foreach", lambda _device: True)
    batches = _batches(50)
    ours, theirs = _model(), _model()
    _train(ours, Prodigy(ours.parameters(), **settings), batches)
    _train(theirs, Reference(theirs.parameters(), **settings), batches)
    assert _relative_gap(ours, theirs) <= 1e-6


@pytest.mark.parametrize(("first", "then"), [(Reference, Prodigy), (Prodigy, Reference)])
def test_a_checkpoint_of_either_resumes_with_the_other(first, then) -> None:
    settings = SETTINGS[1]
    batches = _batches(50)
    whole = _model()
    _train(whole, first(whole.parameters(), **settings), batches)
    resumed = _model()
    before = first(resumed.parameters(), **settings)
    _train(resumed, before, batches[:25])
    saved = before.state_dict()
    after = then(resumed.parameters(), **settings)
    after.load_state_dict(saved)
    _train(resumed, after, batches[25:])
    assert _relative_gap(whole, resumed) <= 1e-6
    keys = {key for state in after.state_dict()["state"].values() for key in state}
    assert keys == {"step", "s", "p0", "exp_avg", "exp_avg_sq"}
    assert after.state_dict()["param_groups"][0].keys() == saved["param_groups"][0].keys()


def _count_reads(monkeypatch, reads: list[str]) -> None:
    """Record every tensor-to-Python read (each one a host sync on a GPU)."""
    for name in ("item", "tolist", "__bool__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)


@pytest.mark.parametrize(("optimizer", "per_step"), [(Prodigy, 1), (Reference, 2 * 4)])
def test_a_step_reads_back_once_not_twice_per_tensor(monkeypatch, optimizer, per_step) -> None:
    net = _model()  # 4 tensors
    stepper = optimizer(net.parameters())
    _train(net, stepper, _batches(1))  # the first step also reads which tensors are zero
    reads: list[str] = []
    _count_reads(monkeypatch, reads)
    _train(net, stepper, _batches(3))
    assert len(reads) == 3 * per_step


def test_the_lora_trains_the_same_with_either(tmp_path, ucmerced) -> None:
    ours = smoke_config(tmp_path / "ours", **{"generator.epochs": 1})
    theirs = smoke_config(
        tmp_path / "theirs", **{"generator.epochs": 1, "generator.optimizer": "prodigy_reference"}
    )
    train_lora(ours)
    train_lora(theirs)
    a, b = load_file(ours.paths.lora_weights), load_file(theirs.paths.lora_weights)
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)
    assert (ours.paths.lora / "loss.csv").read_text() == (
        theirs.paths.lora / "loss.csv"
    ).read_text()
