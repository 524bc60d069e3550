"""Experiment tracking of the LoRA as diffusers' trainers do it (`generator.report_to`):
accelerate's TensorBoard or wandb tracker logs each step's loss and learning rate and each
epoch's sample grid, under `<run>/lora/logs/`. `none` logs nothing (the loss log and the
grids are written either way)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

PROJECT = "synthaug-lora"


def accelerator_options(report_to: str, out: Path) -> dict:
    """`Accelerator` arguments for `report_to` (none: no tracker)."""
    if report_to == "none":
        return {}
    return {"log_with": report_to, "project_dir": str(out / "logs")}


def start(accelerator, report_to: str, settings: dict) -> None:
    """Open the trackers with the LoRA's settings as their run config."""
    if report_to != "none":
        plain = (int, float, str, bool)
        flat = {k: v if isinstance(v, plain) else str(v) for k, v in settings.items()}
        accelerator.init_trackers(PROJECT, config=flat)


def log_step(accelerator, report_to: str, step: int, loss: float, learning_rate: float) -> None:
    if report_to != "none":
        accelerator.log({"loss": loss, "learning_rate": learning_rate}, step=step)


def log_grid(accelerator, report_to: str, step: int, grid: Image.Image) -> None:
    """The epoch's sample grid, as an image of the run at optimizer step `step`."""
    if report_to == "tensorboard":
        pixels = np.asarray(grid)[None]
        accelerator.get_tracker("tensorboard").log_images(
            {"samples": pixels}, step=step, dataformats="NHWC"
        )
    elif report_to == "wandb":
        accelerator.get_tracker("wandb").log_images({"samples": [grid]}, step=step)


def finish(accelerator, report_to: str) -> None:
    if report_to != "none":
        accelerator.end_training()
