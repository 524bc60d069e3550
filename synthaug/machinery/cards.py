"""The model card of an exported LoRA and the dataset card of an exported synthetic set:
hub metadata (`huggingface_hub.ModelCardData` / `DatasetCardData`) and a text that says
what was made, how, and what it scored, from the study's own outputs."""

from __future__ import annotations

import math

from huggingface_hub import DatasetCard, DatasetCardData, ModelCard, ModelCardData

from synthaug.analysis.answer import headline
from synthaug.analysis.quality import quality
from synthaug.analysis.tables import table1
from synthaug.classify import CellRunner
from synthaug.classify.results import finished_cells
from synthaug.config import TINY, StudyConfig
from synthaug.families import family_named
from synthaug.flow import prompt_for
from synthaug.machinery.ship import CARD, card_metadata
from synthaug.sources import local_model

# Licences of the bases the profiles name (their model cards; BFL's flux2 README for klein).
BASE_LICENCES = {
    "black-forest-labs/FLUX.1-dev": {
        "license": "other",
        "license_name": "flux-1-dev-non-commercial-license",
        "license_link": "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md",
    },
    "black-forest-labs/FLUX.2-klein-base-4B": {"license": "apache-2.0"},
    "black-forest-labs/FLUX.2-klein-4B": {"license": "apache-2.0"},
}
UNKNOWN_LICENCE = {"license": "other", "license_name": "see-the-base-model"}


def base_licence(base_model: str) -> dict:
    """The licence metadata of a base: known ones, MIT for the tiny base built here (this
    project's), a local folder's own card's (the shipped base), else `other` pointing at
    the base's own card."""
    if base_model == TINY:
        return {"license": "mit"}
    folder = local_model(base_model)
    if folder is not None and (folder / CARD).is_file():
        meta = card_metadata(folder)
        return {key: meta[key] for key in ("license", "license_name") if key in meta}
    return BASE_LICENCES.get(base_model, UNKNOWN_LICENCE)


def study_facts(cfg: StudyConfig, arm: str, lora_sha256: str) -> dict:
    """What both cards say, read from the finished study: its headline, the arm's quality
    in the classifier's features, the LoRA's settings and digest, the prompts."""

    runner = CellRunner(cfg)
    table = quality(runner, finished_cells(cfg), arm)
    overall = table.loc["all classes"].to_dict() if "all classes" in table.index else {}
    family = family_named(cfg.generator.family)
    return {
        "headline": headline(cfg),
        "quality": {k: v for k, v in overall.items() if not _missing(v)},
        "settings": table1(cfg)["this study"].to_dict(),
        "prompts": {label: prompt_for(cfg, label) for label in runner.classes},
        "family": family.title,
        "pipeline": family.pipeline_class,
        "lora_sha256": lora_sha256,
    }


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _table(rows: dict) -> str:
    lines = ["| | |", "|---|---|"]
    return "\n".join(lines + [f"| {key} | {value} |" for key, value in rows.items()])


def _quality_text(quality: dict) -> str:
    names = {
        "cas": "CAS (accuracy of a classifier trained on these images alone)",
        "precision": "precision",
        "recall": "recall",
        "density": "density",
        "coverage": "coverage",
        "frechet_distance": "Fréchet distance to real images",
    }
    rows = {label: f"{quality[key]:.3f}" for key, label in names.items() if key in quality}
    return _table(rows) if rows else "Not measured."


def model_card(cfg: StudyConfig, facts: dict, grids: list[str]) -> ModelCard:
    """The LoRA's card: base, trigger prompts, settings, sample grids, the headline."""
    base = cfg.generator.base_model
    data = ModelCardData(
        base_model=None if base == TINY else base,
        library_name="diffusers",
        tags=["lora", cfg.generator.family, "text-to-image", "remote-sensing", "synthaug"],
        **base_licence(base),
    )
    prompts = "\n".join(f"- `{label}`: {prompt}" for label, prompt in facts["prompts"].items())
    settings = {k: v for k, v in facts["settings"].items() if str(v).strip()}
    loadable = "<the tiny base's folder, built by synthaug>" if base == TINY else base
    samples = "\n".join(f"![{g}]({g})" for g in grids) or "No sample grids were saved."
    headline = "\n".join(f"- {line}" for line in facts["headline"])
    text = f"""---
{data.to_yaml()}
---

# {cfg.name}: one LoRA for {len(facts["prompts"])} aerial-scene classes

A LoRA on {facts["family"]} (`{facts["pipeline"]}`, base `{base}`), trained with synthaug
on real aerial images ({_source(cfg)}): one LoRA for all classes, the class name in the
prompt. Load it with the stock diffusers loader:

```python
pipe = {facts["pipeline"]}.from_pretrained("{loadable}")
pipe.load_lora_weights("<this repo or folder>")
image = pipe("{next(iter(facts["prompts"].values()))}").images[0]
```

## Prompts

Template `{cfg.generation.prompt_template}`, one keyword per class:

{prompts}

## Training settings

{_table(settings)}

Weights: `pytorch_lora_weights.safetensors` (sha256 of its tensors `{facts["lora_sha256"]}`).

## Samples, one grid per epoch (the first classes)

{samples}

## What the study found

{headline}

Intervals are 95% Student-t over the study's seeds; "real images alone" is the same
classifier trained on the mix's real images only.
"""
    return ModelCard(text)


def _source(cfg: StudyConfig) -> str:
    d = cfg.dataset
    return d.hub_id or d.local or d.path or "a local folder"


def _dataset_card_data(cfg: StudyConfig, classes: list[str], n: int) -> DatasetCardData:
    """The card's metadata: tags, size, the image folder's layout and its class names."""
    names = {str(i): name for i, name in enumerate(classes)}
    columns = {"prompt": "string", "seed": "int64", "steps": "int64", "guidance": "float64"}
    columns |= dict.fromkeys(("lora_sha256", "family", "base_model", "sha256"), "string")
    features = [
        {"name": "image", "dtype": "image"},
        {"name": "label", "dtype": {"class_label": {"names": names}}},
        *({"name": name, "dtype": dtype} for name, dtype in columns.items()),
    ]
    return DatasetCardData(
        tags=["synthetic", "remote-sensing", "aerial-imagery", cfg.generator.family, "synthaug"],
        task_categories=["image-classification"],
        size_categories=[_size_category(n)],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": ["train/*/*.png", "train/metadata.csv"]}],
            }
        ],
        dataset_info={"features": features},
        **base_licence(cfg.generator.base_model),
    )


def dataset_card(
    cfg: StudyConfig, arm: str, facts: dict, classes: list[str], n: int
) -> DatasetCard:
    """The synthetic set's card: declared class names, how it was made, what it scored."""
    data = _dataset_card_data(cfg, classes, n)
    base = cfg.generator.base_model
    how = {
        "arm": arm,
        "generator": f"{facts['family']} (`{facts['pipeline']}`), base `{base}`",
        "LoRA": "none (the base alone)" if arm == "base" else f"sha256 `{facts['lora_sha256']}`",
        "images": f"{n}, {len(classes)} classes, {cfg.generator.resolution} px",
        "steps / guidance": f"{cfg.generation.steps} / {cfg.generation.guidance_scale:g}",
        "seed": f"per image, from (generation.seed {cfg.generation.seed}, class, index)",
    }
    text = f"""---
{data.to_yaml()}
---

# {cfg.name}: synthetic aerial images ({arm} arm)

**These images are synthetic**: generated by a diffusion model, not photographed. Every
row of `train/metadata.csv` gives its class, prompt, seed, steps, guidance, the LoRA's
digest and the image's sha256, so any image can be made again.

```python
from datasets import load_dataset

images = load_dataset("imagefolder", data_dir="<this folder>")["train"]
images = images.class_encode_column("label")  # a ClassLabel of the {len(classes)} classes
```

## How they were made

{_table(how)}

## What they scored

Measured by the study against real images ({_source(cfg)}), in the features of its
classifier backbone `{cfg.classifier.model}`:

{_quality_text(facts["quality"])}

{chr(10).join(f"- {line}" for line in facts["headline"])}
"""
    return DatasetCard(text)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"
