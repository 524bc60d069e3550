"""Library messages the study expects, silenced on the logger that emits them; any other
message from the same logger (an unexpected load report, say) still shows."""

from __future__ import annotations

import logging
import re
import warnings


def _only_new_head(message: str) -> bool:
    """A classifier load report that lists only the new classification head (missing
    `classifier.*`, newly initialised, as fine-tuning means) and the backbone's pooler
    the head does not use (unexpected `pooler.*`)."""
    if "LOAD REPORT" not in message:
        return False
    message = re.sub(r"\x1b\[[0-9;]*m", "", message)  # colours, on a terminal
    rows = [line.split("|") for line in message.splitlines() if line.count("|") >= 2]
    keyed = [(key.strip(), status.strip()) for key, status, *_ in rows[1:] if key.strip()]
    allowed = {"MISSING": "classifier.", "UNEXPECTED": "pooler."}
    return bool(keyed) and all(
        status in allowed and key.startswith(allowed[status]) for key, status in keyed
    )


# (logger, what its expected message looks like, why it is expected)
EXPECTED = (
    (
        "transformers.utils.import_utils",
        re.compile(r"requires torchvision \(not installed\); falling back to `\w+Pil`").search,
        "the PIL image processors are the backends the study uses",
    ),
    (
        "diffusers.loaders.peft",
        re.compile(r"No LoRA keys associated to (CLIPTextModel|T5EncoderModel)").search,
        "the study's LoRA adapts the transformer only, as the paper's does",
    ),
    (
        "transformers.modeling_utils",
        _only_new_head,
        "a backbone loaded for classification gets a new head",
    ),
)


class _DropExpected(logging.Filter):
    def __init__(self, matches) -> None:
        super().__init__()
        self.matches = matches

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.matches(record.getMessage())


def install() -> None:
    """Filter each expected message on its own logger (idempotent; imports nothing).
    tqdm's notebook bars need ipywidgets, which the study does not use: its own progress
    lines update a plain display instead."""
    warnings.filterwarnings("ignore", message="IProgress not found")
    for name, matches, _why in EXPECTED:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropExpected) for f in logger.filters):
            logger.addFilter(_DropExpected(matches))


def before_loading() -> None:
    """Before a stage loads a model: the expected messages filtered (`install`), and
    diffusers' and transformers' per-component loading bars off (a notebook keeps every
    refresh of them; the study's own progress lines say what is loading)."""
    # deferred: both libraries are heavy, and `install` must not load them
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    install()
