"""The pretrained tiny base as an artifact: copied out of the model cache into a folder of
the repository (`models/tiny-flux1-aid`) with its card, and checked against that card.

`synthaug pretrain -f PROFILE --to FOLDER` pretrains the profile's `tiny` base with its
`pretrain` recipe (resuming a stopped pretraining; reusing a cached one), then writes
FOLDER: the pipeline as `save_pretrained` left it (weights as safetensors only), its
`pretraining.json`, and a README.md card (model-card metadata; the command, steps,
batch, losses, minutes, machine and date; the training data and its licence terms; the
sha256 of every file). `verify_base(FOLDER)` checks the files against the card.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import tempfile
from pathlib import Path

import yaml

from synthaug.config import TINY, DataSource, StudyConfig
from synthaug.io import atomic_write_text, read_json, sha256_file
from synthaug.pretrain import base_model_source
from synthaug.sources import locate

CARD = "README.md"
# the files a shipped base may hold: configs, tokenizers and safetensors weights
ALLOWED = (".json", ".safetensors", ".txt")
HASH_ROW = re.compile(r"^\| `([^`]+)` \| ([0-9a-f]{64}) \|$", re.MULTILINE)
AID_TERMS = (
    "AID (Xia et al., IEEE TGRS 2017): 30 classes, 10,000 images, released for research "
    "use; cite Xia et al. 2017. These weights were trained on it and inherit its terms: "
    "research use."
)


class ShipError(RuntimeError):
    """A shipped base that cannot be written or does not match its card."""


def ship_base(cfg: StudyConfig, to: Path, command: str) -> Path:
    """Pretrain (or reuse) the profile's tiny base and write it with its card to `to`."""
    if cfg.generator.pretrain is None:
        raise ShipError(f"profile {cfg.name} has no generator.pretrain section: no recipe to run")
    if to.exists():
        raise ShipError(f"{to} exists; remove it (or choose another --to) to ship a base there")
    recipe = cfg.model_copy(
        update={"generator": cfg.generator.model_copy(update={"base_model": TINY})}
    )
    source = Path(base_model_source(recipe))
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=to.parent, prefix=f".{to.name}."))
    try:
        _copy_pipeline(source, staging)
        atomic_write_text(staging / CARD, card_text(recipe, staging, to.name, command))
        os.replace(staging, to)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return to


def _copy_pipeline(source: Path, target: Path) -> None:
    for path in sorted(source.rglob("*")):
        if path.is_file():
            if path.suffix not in ALLOWED:
                raise ShipError(f"{path} is not a config, tokenizer or safetensors file")
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / path.relative_to(source))


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` but the card, by its path in the folder."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != CARD
    }


def card_hashes(folder: Path) -> dict[str, str]:
    """The sha256 table the card states."""
    return dict(HASH_ROW.findall((folder / CARD).read_text()))


def card_metadata(folder: Path) -> dict:
    """The card's YAML metadata block."""
    text = (folder / CARD).read_text()
    return yaml.safe_load(text.split("---\n")[1])


def verify_base(folder: Path) -> None:
    """Every file of the shipped base is the one its card names, and no file is missing."""
    stated, found = card_hashes(folder), file_hashes(folder)
    if stated != found:
        changed = sorted(set(stated.items()) ^ set(found.items()))
        raise ShipError(f"{folder} differs from its card in {changed}")


def _machine(record: dict) -> dict:
    """Where the pretraining ran, as its record states."""
    return record.get("machine") or {"cpu": "not recorded"}


def _data_source(data: DataSource) -> str:
    """Where the pretraining images came from, with no path of this machine."""
    found = locate(data)
    if found.kind == "hub":
        return f"hub dataset `{found.where}`"
    return f"a local copy, `{Path(found.where).name}/`, of hub dataset `{data.hub_id}`"


def _recipe_rows(cfg: StudyConfig, record: dict) -> list[str]:
    """The card's "how it was made" table rows: architecture, steps, losses, time, machine."""
    pre, tiny = cfg.generator.pretrain, cfg.generator.tiny
    machine = _machine(record)
    losses = record["vae_losses"], record["transformer_losses"]
    return [
        f"| architecture | {tiny.num_layers} double + {tiny.num_single_layers} single blocks, "
        f"{tiny.num_attention_heads} heads x {tiny.attention_head_dim}, text width "
        f"{tiny.text_dim}, VAE channels {tiny.vae_channels} |",
        f"| resolution | {cfg.generator.resolution} px |",
        f"| VAE | {pre.vae_steps} steps, batch {pre.batch_size}, crops {pre.vae_crop} px, "
        f"lr {pre.vae_learning_rate}, loss {losses[0][0]:.4f} -> "
        f"{sum(losses[0][-100:]) / len(losses[0][-100:]):.4f} (mean of the last 100) |",
        f"| transformer | {pre.transformer_steps} steps, batch {pre.batch_size}, lr "
        f"{pre.transformer_learning_rate}, caption dropout {pre.caption_dropout}, text "
        f"encoders trained: {pre.train_text_encoders}, loss {losses[1][0]:.4f} -> "
        f"{sum(losses[1][-100:]) / len(losses[1][-100:]):.4f} (mean of the last 100) |",
        f"| minutes | {record['seconds'] / 60:.1f} ({record['vae_seconds'] / 60:.1f} VAE) |",
        f"| machine | {machine.get('cpu')}, {machine.get('threads', '?')} threads, torch "
        f"{machine.get('torch', '?')} |",
        f"| date | {machine.get('date') or datetime.date.today().isoformat()} |",
    ]


def card_text(cfg: StudyConfig, folder: Path, name: str, command: str) -> str:
    """The card: metadata, how the base was made, its data and licence, its files."""
    record = read_json(folder / "pretraining.json")
    pre = cfg.generator.pretrain
    meta = {
        "library_name": "diffusers",
        "pipeline_tag": "text-to-image",
        "license": "other",
        "license_name": "research-use-aid",
        "tags": ["flux", "tiny", "remote-sensing", "aerial", "synthaug"],
        "datasets": ["blanchon/AID"],
    }
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).strip(),
        "---",
        f"# {name}: a tiny FLUX.1-architecture base pretrained on AID",
        "",
        "The base of synthaug's CPU profile (`params/ucmerced-cpu.yaml`): a `FluxPipeline` "
        "of FLUX.1's architecture, small enough for a CPU, pretrained once by synthaug's "
        "own recipe (`synthaug/pretrain.py`) so that no study spends its first minutes "
        "rebuilding it. Load it with `FluxPipeline.from_pretrained(<this folder>)`.",
        "",
        "## How it was made",
        "",
        f"    {command}",
        "",
        "| | |",
        "|---|---|",
        *_recipe_rows(cfg, record),
        "",
        "## Training data and licence",
        "",
        f"{record['images']} images of {len(record['classes'])} classes "
        f"({_data_source(pre.data)}), each captioned `{pre.caption_template}` with its "
        f"class name. {AID_TERMS}",
        "",
        "## Files",
        "",
        "| file | sha256 |",
        "|---|---|",
        *(f"| `{name}` | {digest} |" for name, digest in file_hashes(folder).items()),
        "",
    ]
    return "\n".join(lines)
