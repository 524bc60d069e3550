"""Prodigy (Mishchenko & Defazio) as prodigyopt 1.1.2 computes it, with one host sync a step.

prodigyopt reads two numbers back to the host for every parameter tensor (a dot product
and an L1 norm, `.item()` each): 1,672 syncs a step for FLUX's 836 LoRA tensors, which
at batch 1 leaves the GPU waiting. The same sums are kept here on the device, in float64
where prodigyopt adds Python floats, and read back together once, for the new step size
`d` that the update needs. The defaults, the parameter-group scalars and the per-tensor
state keys (`step`, `s`, `p0`, `exp_avg`, `exp_avg_sq`) are prodigyopt's, so a
checkpoint written by either optimizer resumes with the other. On a GPU the elementwise
updates run as foreach ops over each group's tensors; on a CPU tensor by tensor, where
the parameters equal prodigyopt's bit for bit (tests/test_prodigy.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist


class Prodigy(torch.optim.Optimizer):
    """prodigyopt.Prodigy's algorithm and arguments, one device-to-host copy per step."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decouple: bool = True,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = float("inf"),
        fsdp_in_use: bool = False,
        slice_p: int = 1,
    ) -> None:
        if d0 <= 0 or lr <= 0 or eps <= 0:
            raise ValueError(f"Prodigy needs d0, lr and eps > 0; got {d0}, {lr}, {eps}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"Prodigy needs betas in [0, 1); got {betas}")
        defaults = {
            "lr": lr,
            "betas": betas,
            "beta3": beta3,
            "eps": eps,
            "weight_decay": weight_decay,
            "d": d0,
            "d0": d0,
            "d_max": d0,
            "d_numerator": 0.0,
            "d_coef": d_coef,
            "k": 0,
            "growth_rate": growth_rate,
            "use_bias_correction": use_bias_correction,
            "decouple": decouple,
            "safeguard_warmup": safeguard_warmup,
            "fsdp_in_use": fsdp_in_use,
            "slice_p": slice_p,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        first = self.param_groups[0]
        lr = max(group["lr"] for group in self.param_groups)
        d, beta1, beta2 = first["d"], *first["betas"]
        beta3 = first["beta3"] if first["beta3"] is not None else math.sqrt(beta2)
        dlr = d * lr * self._bias_correction(first, beta1, beta2)
        sums = self._accumulate(d, dlr, lr, beta1, beta2, beta3)
        if sums is None:
            return loss
        delta, denominator = self._reduce(sums)
        if denominator == 0 and not first["fsdp_in_use"]:
            return loss  # no gradient yet: prodigyopt leaves everything as it was
        numerator = first["d_numerator"] * beta3 + delta
        d, d_max, d_hat = self._new_d(first, d, lr, numerator, denominator)
        for group in self.param_groups:
            group.update(d_numerator=numerator, d_denom=denominator, d=d, d_max=d_max)
            group["d_hat"] = d_hat
            self._update(group, d, dlr, beta1)
        return loss

    # --- the step's phases ----------------------------------------------------------

    @staticmethod
    def _bias_correction(group: dict, beta1: float, beta2: float) -> float:
        if not group["use_bias_correction"]:
            return 1.0
        k = group["k"]
        return ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1))

    def _accumulate(
        self, d: float, dlr: float, lr: float, beta1: float, beta2: float, beta3: float
    ) -> torch.Tensor | None:
        """The moments' and `s`'s updates, and on the device (float64) the two sums the
        new `d` needs: the numerator's increment and the denominator. None: no grads."""
        sums: torch.Tensor | None = None
        for group in self.param_groups:
            if group["lr"] not in (lr, 0.0):
                raise RuntimeError("Prodigy's parameter groups take one lr, or 0")
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            self._init_state(group, params, beta1)
            grads = self._grads(group, params)
            if sums is None:
                sums = torch.zeros(2, dtype=torch.float64, device=params[0].device)
            if group["lr"] > 0.0:
                sums += self._group_sums(group, params, grads, d, dlr, beta1, beta2, beta3)
        return sums

    def _init_state(self, group: dict, params: list[torch.Tensor], beta1: float) -> None:
        """prodigyopt's state for new tensors; which start all zero is read in one sync."""
        new = [p for p in params if "step" not in self.state[p]]
        if not new:
            return
        nonzero = torch.stack([p.any() for p in new]).tolist()
        slice_p = group["slice_p"]
        for p, any_nonzero in zip(new, nonzero, strict=True):
            state = self.state[p]
            state["step"] = 0
            state["s"] = torch.zeros_like(p.flatten()[::slice_p]).detach()
            state["p0"] = (
                p.flatten()[::slice_p].detach().clone()
                if any_nonzero
                else torch.tensor(0, device=p.device, dtype=p.dtype)
            )
            if beta1 > 0:
                state["exp_avg"] = torch.zeros_like(p).detach()
            state["exp_avg_sq"] = torch.zeros_like(p).detach()
            if hasattr(p, "_fsdp_flattened"):
                group["fsdp_in_use"] = True

    @staticmethod
    def _grads(group: dict, params: list[torch.Tensor]) -> list[torch.Tensor]:
        grads = [p.grad for p in params]
        if group["weight_decay"] != 0 and not group["decouple"]:
            torch._foreach_add_(grads, params, alpha=group["weight_decay"])
        return grads

    def _group_sums(
        self,
        group: dict,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        d: float,
        dlr: float,
        beta1: float,
        beta2: float,
        beta3: float,
    ) -> torch.Tensor:
        """One group's updates of the moments and `s`, and its [numerator, denominator]."""
        slice_p, d0 = group["slice_p"], group["d0"]
        states = [self.state[p] for p in params]
        sliced = [g.flatten()[::slice_p] for g in grads]
        dots = [
            torch.dot(g, s["p0"] - p.flatten()[::slice_p])
            for g, s, p in zip(sliced, states, params, strict=True)
        ]
        numerator = (d / d0) * dlr * torch.stack(dots).double().sum()
        scale = (d / d0) * d if group["safeguard_warmup"] else (d / d0) * dlr
        decays = (beta1, d * (1 - beta1), beta2, d * d * (1 - beta2), beta3, scale)
        foreach = uses_foreach(params[0].device)
        (_moments_foreach if foreach else _moments_each)(states, grads, sliced, *decays)
        # summed as prodigyopt sums them: foreach_norm rounds otherwise, and the step size
        # feeds back into every later step
        norms = [state["s"].abs().sum() for state in states]
        denominator = torch.stack(norms).double().sum()
        return torch.stack([numerator, denominator])

    def _reduce(self, sums: torch.Tensor) -> tuple[float, float]:
        """The step's one sync (after the all-reduce, with sharded parameters)."""
        if self.param_groups[0]["fsdp_in_use"]:
            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        numerator, denominator = sums.tolist()
        return numerator, denominator

    @staticmethod
    def _new_d(
        group: dict, d: float, lr: float, numerator: float, denominator: float
    ) -> tuple[float, float, float]:
        """prodigyopt's new step size `d`, its running maximum and its raw estimate."""
        d_hat, d_max = d, group["d_max"]
        if lr > 0.0:
            d_hat = group["d_coef"] * numerator / denominator
            if d == group["d0"]:
                d = max(d, d_hat)
            d_max = max(d_max, d_hat)
            d = min(d_max, d * group["growth_rate"])
        return d, d_max, d_hat

    def _update(self, group: dict, d: float, dlr: float, beta1: float) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        states = [self.state[p] for p in params]
        for state in states:
            state["step"] += 1
        if params:
            if group["weight_decay"] != 0 and group["decouple"]:
                torch._foreach_add_(params, params, alpha=-group["weight_decay"] * dlr)
            numerators = [s["exp_avg"] for s in states] if beta1 > 0 else [p.grad for p in params]
            scale = -dlr if beta1 > 0 else -dlr * d
            squares = [s["exp_avg_sq"] for s in states]
            _step(params, numerators, squares, d * group["eps"], scale)
        group["k"] += 1


def uses_foreach(device: torch.device) -> bool:
    """Foreach ops on accelerators; tensor by tensor on a CPU (`_moments_each`)."""
    return device.type != "cpu"


def _moments_foreach(states, grads, sliced, b1, w1, b2, w2, b3, w3) -> None:
    """The moving averages m = b1 m + w1 g, v = b2 v + w2 g², s = b3 s + w3 g[::p], as
    foreach ops over all tensors (a few kernel launches on a GPU)."""
    if b1 > 0:
        averages = [state["exp_avg"] for state in states]
        torch._foreach_mul_(averages, b1)
        torch._foreach_add_(averages, grads, alpha=w1)
    squares = [state["exp_avg_sq"] for state in states]
    torch._foreach_mul_(squares, b2)
    torch._foreach_addcmul_(squares, grads, grads, value=w2)
    accumulators = [state["s"] for state in states]
    torch._foreach_mul_(accumulators, b3)
    torch._foreach_add_(accumulators, sliced, alpha=w3)


def _moments_each(states, grads, sliced, b1, w1, b2, w2, b3, w3) -> None:
    """The same updates tensor by tensor, as prodigyopt runs them: on a CPU, foreach ops
    over all tensors were slower (a step of 836 tensors of 16x3072, 2 cores: 275 ms all
    foreach, 200 ms so, prodigyopt 177 ms; at the CPU profile's LoRA size, 100 tensors of
    8x512: 5.6 ms, prodigyopt 5.9 ms)."""
    for state, grad, piece in zip(states, grads, sliced, strict=True):
        if b1 > 0:
            state["exp_avg"].mul_(b1).add_(grad, alpha=w1)
        state["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=w2)
        state["s"].mul_(b3).add_(piece, alpha=w3)


def _step(params, numerators, squares, eps: float, scale: float) -> None:
    """params += scale * numerator / (sqrt(square) + eps): on a GPU as foreach ops (a few
    launches for all tensors), on a CPU tensor by tensor (`_moments_each`)."""
    if not uses_foreach(params[0].device):
        for p, numerator, square in zip(params, numerators, squares, strict=True):
            p.addcdiv_(numerator, square.sqrt().add_(eps), value=scale)
        return
    denominators = torch._foreach_sqrt(squares)
    torch._foreach_add_(denominators, eps)
    torch._foreach_addcdiv_(params, numerators, denominators, value=scale)
