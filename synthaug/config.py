"""One validated schema for a study: loaded from YAML, overridden with dotted keys.

The same `StudyConfig` object is built by the notebooks (from papermill parameters),
the CLI and the tests, so a bad value fails the same way everywhere: one `ConfigError`
naming the key, the value given and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from synthaug.families import FAMILIES
from synthaug.paths import RunPaths, resolve_path
from synthaug.runtime import quiet
from synthaug.runtime.compiling import CompileMode

CLASS_KEYWORD = "{class_name}"


class ConfigError(ValueError):
    """A study configuration that cannot be used; the message says which key and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSource(_Section):
    """Where real images come from, so that a profile runs anywhere: an explicit folder
    (`path`, which wins), else the local copy `local` under the data root (`SYNTHAUG_DATA`,
    or `../shared/data` beside the project) where it exists, else the hub (`hub_id`),
    downloaded once into the `datasets` cache (`synthaug.sources.locate`)."""

    path: str | None = Field(None, description="local ImageFolder root: <path>/<class>/<image>")
    local: str | None = Field(
        None, description="folder name of a local copy under $SYNTHAUG_DATA, e.g. ucmerced"
    )
    hub_id: str | None = Field(
        None, description="Hugging Face dataset id, or a folder written by Dataset.save_to_disk"
    )
    hub_revision: str | None = Field(None, description="hub branch, tag or commit; None = main")
    hub_split: str = "train"
    image_column: str = "image"
    label_column: str = "label"
    download_size: str | None = Field(
        None, description="what the hub download weighs, for messages, e.g. 'about 416 MB'"
    )

    @model_validator(mode="after")
    def _has_a_source(self) -> DataSource:
        if self.path is None and self.local is None and self.hub_id is None:
            raise ValueError(
                "give a source: path (an ImageFolder), local (a copy under $SYNTHAUG_DATA) "
                "and/or hub_id (a Hugging Face dataset)"
            )
        return self


class DatasetConfig(DataSource):
    """The study's real images: a `DataSource`, the image size and which classes."""

    image_size: int = Field(256, gt=0, description="images of another size are resized to this")
    classes: list[str] | None = Field(None, description="subset of class names; None = all")
    class_words: dict[str, str] = Field(
        {},
        description="prompt words of a class, where its name does not read as words "
        "(e.g. {01_forest: forest}); other classes: the name split into words",
    )
    on_corrupt: Literal["error", "skip"] = Field(
        "error", description="unreadable image: stop with its path, or skip it with a warning"
    )


class SplitsConfig(_Section):
    """Disjoint, class-stratified splits: LoRA training, real pool, test."""

    unit: Literal["per_class", "total"] = Field(
        "per_class", description="counts are per class, or totals spread evenly over classes"
    )
    lora: int = Field(ge=0, description="real images the LoRA is trained on")
    pool: int | None = Field(None, ge=0, description="real images mixes draw from; None = rest")
    test: int = Field(gt=0, description="real images every classifier is tested on")
    seed: int = 0


class TinyFluxConfig(_Section):
    """A pipeline of the family's architecture small enough for a CPU, built locally from
    this config (FLUX.1: CLIP + T5 stand-ins; FLUX.2 [klein]: a Qwen3 stand-in)."""

    num_layers: int = Field(1, ge=1)
    num_single_layers: int = Field(1, ge=1)
    attention_head_dim: int = Field(16, ge=16)
    num_attention_heads: int = Field(2, ge=1)
    text_dim: int = Field(32, ge=8, description="width of the text-encoder stand-ins")
    text_layers: int = Field(2, ge=1)
    vae_channels: list[int] = Field([32, 64, 64], min_length=2)
    vae_norm_groups: int = Field(
        4,
        ge=1,
        description="GroupNorm groups in the VAE; one channel per group would normalise "
        "away each image's colour",
    )
    vocab_size: int = Field(400, ge=300, description="size of the locally trained tokenizers")
    seed: int = 0

    @model_validator(mode="after")
    def _rope_fits(self) -> TinyFluxConfig:
        if self.attention_head_dim % 16:
            raise ValueError("tiny.attention_head_dim must be a multiple of 16 (3-axis RoPE)")
        if any(c % self.vae_norm_groups for c in self.vae_channels):
            raise ValueError("tiny.vae_channels must all be multiples of tiny.vae_norm_groups")
        return self


class AdapterConfig(_Section):
    rank: int = Field(16, gt=0)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = Field(
        None,
        min_length=1,
        description="module-name suffixes inside the transformer's blocks; None: the "
        "family's attention and MLP projections of both streams (synthaug.families)",
    )


class PretrainConfig(_Section):
    """Pretrain the tiny base on real aerial images (VAE, then transformer, full fine-tune),
    so that its LoRA adapts a model that knows aerial scenes, as FLUX.1-dev does."""

    data: DataSource = Field(description="the real images, e.g. AID: local aid, hub blanchon/AID")
    max_per_class: int | None = Field(None, gt=0, description="cap images per class")
    caption_template: str = Field(
        "an aerial image of {class_name}",
        description="caption of each image; the class folder name as words fills {class_name}",
    )
    caption_dropout: float = Field(
        0.0, ge=0, lt=1, description="share of captions replaced by the empty one (for CFG)"
    )
    train_text_encoders: bool = Field(
        False,
        description="train the tiny CLIP and T5 with the transformer (they stand in "
        "for pretrained ones); otherwise they stay random and frozen",
    )
    vae_steps: int = Field(200, gt=0)
    vae_learning_rate: float = Field(1e-3, gt=0)
    vae_crop: int | None = Field(
        None,
        gt=0,
        description="train the VAE on random square crops of this many pixels (a convolutional "
        "VAE then decodes any size): more steps for the same compute; None: whole images",
    )
    kl_weight: float = Field(1e-6, ge=0)
    transformer_steps: int = Field(600, gt=0)
    transformer_learning_rate: float = Field(3e-4, gt=0)
    batch_size: int = Field(32, gt=0)
    threads: int = Field(
        2,
        gt=0,
        description="CPU threads the transformer's pretraining runs on, whatever the machine "
        "has (the VAE's runs on one): the thread count changes the float sums and so the "
        "base's bits (bench/base_drift.py)",
    )
    seed: int = 0


class GeneratorConfig(_Section):
    """The diffusion model and how its one LoRA is trained."""

    family: str = Field(
        "flux1",
        description="flux1 (FluxPipeline, e.g. FLUX.1-dev) or flux2-klein (Flux2KleinPipeline, "
        "e.g. FLUX.2-klein-base-4B); checked against the pipeline the base model holds",
    )
    base_model: str = Field(
        description="hub id or local folder of the family's pipeline; 'tiny' builds one from `tiny`"
    )
    tiny: TinyFluxConfig = TinyFluxConfig()
    pretrain: PretrainConfig | None = Field(
        None, description="with base_model 'tiny': pretrain it on real images first"
    )
    lora: AdapterConfig = AdapterConfig()
    optimizer: Literal["prodigy", "prodigy_reference", "adamw"] = Field(
        "prodigy",
        description="prodigy: prodigyopt's algorithm with one host sync a step "
        "(synthaug.prodigy); prodigy_reference: prodigyopt itself",
    )
    learning_rate: float = Field(1.0, gt=0, description="Prodigy expects 1.0")
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: Literal["cosine", "constant"] = "cosine"
    lr_warmup_steps: int = Field(0, ge=0)
    epochs: int = Field(6, gt=0)
    repeats: int = Field(5, gt=0, description="times each image is seen per epoch")
    batch_size: int = Field(1, gt=0)
    resolution: int = Field(256, gt=0)
    timestep_sampling: Literal["logit_normal", "uniform", "shifted_sigmoid"] = "logit_normal"
    guidance_scale: float = Field(1.0, ge=0, description="guidance embedding while training")
    caption_dropout: float = Field(
        0.0, ge=0, lt=1, description="share of LoRA captions replaced by the empty one (for CFG)"
    )
    max_sequence_length: int = Field(
        512, gt=0, description="text-encoder tokens per prompt (T5 for flux1, Qwen3 for flux2)"
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    compile: CompileMode = Field(
        "none",
        description="torch.compile each repeated block (regional; -cudagraphs: with CUDA "
        "graphs); compiled kernels round differently, so it is one of the stage's settings "
        "(runtime.compiling)",
    )
    checkpoint_every: int = Field(100, gt=0, description="optimizer steps between checkpoints")
    report_to: Literal["none", "tensorboard", "wandb"] = Field(
        "none",
        description="log the LoRA's loss, learning rate and sample grids (accelerate's "
        "trackers, under <run>/lora/logs); wandb needs `pip install -e .[wandb]`",
    )
    seed: int = 0

    @field_validator("family")
    @classmethod
    def _known_family(cls, name: str) -> str:

        if name not in FAMILIES:
            raise ValueError(f"generator.family {name!r} is not one of {sorted(FAMILIES)}")
        return name


class GenerationConfig(_Section):
    count: int = Field(gt=0, description="synthetic images in total, spread evenly over classes")
    prompt_template: str = Field(
        "an aerial image of {class_name}", description="must contain {class_name}"
    )
    steps: int = Field(28, gt=0)
    guidance_scale: float = Field(
        3.5,
        ge=0,
        description="flux1: distilled guidance (FLUX.1-dev's guidance embedding); "
        "flux2-klein: classifier-free guidance against the empty prompt (its base models "
        "have no guidance embedding; 4.0 in its docs)",
    )
    true_cfg_scale: float = Field(
        1.0,
        ge=1,
        description="classifier-free guidance against the empty prompt (the caption that "
        "caption dropout trains), for bases that are not guidance-distilled (two passes per "
        "step); 1 = off",
    )
    lora_scale: float = Field(1.0, ge=0)
    batch_size: int = Field(4, gt=0)
    seed: int = 0
    compile: CompileMode = Field(
        "none",
        description="torch.compile each repeated block (regional; -cudagraphs: with CUDA "
        "graphs); compiled kernels round differently, so it is one of the stage's settings "
        "(runtime.compiling)",
    )
    arms: list[Literal["lora", "base", "img2img", "filtered"]] = Field(
        ["lora"],
        min_length=1,
        description="synthetic sets to make and study, each in its own folder: `lora` (the "
        "paper's), `base` (same prompts and seeds, base model without the LoRA: what the "
        "LoRA adds), `img2img` (with the LoRA, each image started from a LoRA-training "
        "image of its class at `img2img_strength`), `filtered` (the LoRA's images, "
        "`oversample` times as many per class, of which a classifier trained on the LoRA's "
        "real images keeps the most recognisable)",
    )
    oversample: int = Field(
        3,
        ge=2,
        description="filtered arm: candidates per kept image; the LoRA arm's images are "
        "the first of them, so it generates (oversample - 1) x count more",
    )
    img2img_strength: float = Field(
        0.6, gt=0, le=1, description="share of the schedule img2img denoises (1: from noise)"
    )

    def check_arm(self, arm: str) -> None:
        """A `ValueError` unless `arm` is one of `arms`."""
        if arm not in self.arms:
            raise ValueError(f"arm {arm!r} is not in generation.arms {self.arms}")

    @field_validator("arms")
    @classmethod
    def _lora_first(cls, arms: list[str]) -> list[str]:
        if arms[0] != "lora" or len(set(arms)) != len(arms):
            raise ValueError(
                "generation.arms must start with `lora` (the paper's set, which the mixes "
                f"use) and name each arm once, e.g. [lora, base]; got {arms}"
            )
        return arms

    @field_validator("prompt_template")
    @classmethod
    def _has_keyword(cls, template: str) -> str:
        if CLASS_KEYWORD not in template:
            raise ValueError(f"prompt_template must contain {CLASS_KEYWORD}")
        return template


class TinyVitConfig(_Section):
    hidden_size: int = Field(32, ge=8)
    num_hidden_layers: int = Field(2, ge=1)
    num_attention_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(64, ge=8)
    patch_size: int = Field(8, ge=2)
    seed: int = 0


class ClassifierConfig(_Section):
    model: str = Field(
        description="an image backbone: a transformers hub id or folder, `timm/<name>` (timm's "
        "create_model and data config), a folder timm saved, 'dinov2-small-offline', or a "
        "stand-in built from `tiny`: 'tiny' (a transformers ViT) or 'tiny-timm' (a timm ViT)"
    )
    tiny: TinyVitConfig = TinyVitConfig()
    mode: Literal["full", "linear_probe"] = Field(
        "full", description="fine-tune everything, or train a linear head on frozen features"
    )
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(32, gt=0)
    learning_rate: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    image_size: int = Field(224, gt=0)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    num_workers: int = Field(0, ge=0, description="DataLoader workers (preload: false)")
    preload: bool = Field(
        True,
        description="full fine-tune: decode and resize each image once per cell, onto the "
        "device, and flip and normalise there; false: a DataLoader decodes every epoch",
    )
    compile: CompileMode = Field(
        "none",
        description="torch.compile each repeated block (regional; -cudagraphs: with CUDA "
        "graphs); compiled kernels round differently, so it is one of the stage's settings "
        "(runtime.compiling)",
    )


class StudyMix(_Section):
    n_generated: int = Field(ge=0)
    n_real: int = Field(ge=0)

    @model_validator(mode="after")
    def _not_empty(self) -> StudyMix:
        if self.n_generated + self.n_real == 0:
            raise ValueError("a mix needs at least one image")
        return self


class SampleEfficiency(_Section):
    """Real-only against real + a fixed synthetic set, over real images per class."""

    real_per_class: list[int] = Field(min_length=2, description="e.g. [1, 2, 5, 10, 20, 50]")
    generated_per_class: int = Field(gt=0, description="added to every point, per arm")

    @field_validator("real_per_class")
    @classmethod
    def _increasing(cls, counts: list[int]) -> list[int]:
        if counts != sorted(set(counts)) or counts[0] < 1:
            raise ValueError(
                f"study.sample_efficiency.real_per_class must increase from 1 or more: {counts}"
            )
        return counts


class StudySection(_Section):
    """Which training sets the classifier is fitted on, and how many seeds each."""

    mixes: list[StudyMix] | None = Field(None, description="explicit generated:real pairs")
    generated_shares: list[float] | None = Field(None, description="shares of generated images")
    total: int | None = Field(None, gt=0, description="images per mix, with generated_shares")
    seeds: list[int] = Field([0], min_length=1, description="classifier seeds of every cell")
    generator_seeds: list[int] = Field(
        [0],
        min_length=1,
        description="the LoRA and its synthetic sets are made once per generator seed g "
        "(generator.seed + g seeds the LoRA's initialisation, noise and order, "
        "generation.seed + g its images); mix cells run for every (g, seed), real-only "
        "cells once per seed",
    )
    baseline_real_same_count: bool = True
    baseline_real_full: bool = True
    baseline_generated_only: bool = True
    sample_efficiency: SampleEfficiency | None = None
    workers: int = Field(1, ge=1, description="classifier notebooks run at once (CPU profiles)")
    devices: int | None = Field(
        None,
        ge=1,
        description="GPUs to spread generation shards and classifier cells over (default: "
        "every visible one, CUDA_VISIBLE_DEVICES respected); on a CPU, generation processes",
    )
    reuse_kernels: bool = Field(
        True,
        description="run a stage's notebooks in one warm kernel per worker, cleared before "
        "each notebook (false: a fresh kernel per notebook)",
    )

    @field_validator("seeds", "generator_seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct: {seeds}")
        return seeds

    @model_validator(mode="after")
    def _one_form(self) -> StudySection:
        if (self.mixes is None) == (self.generated_shares is None):
            raise ValueError("give exactly one of study.mixes or study.generated_shares (+ total)")
        if self.generated_shares is not None:
            if self.total is None:
                raise ValueError("study.generated_shares needs study.total")
            if any(not 0 <= s <= 1 for s in self.generated_shares):
                raise ValueError("study.generated_shares must lie in [0, 1]")
        return self

    @property
    def mix_size(self) -> int:
        """Images in the largest mix: the size of the real-only full baseline."""
        return max(m.n_generated + m.n_real for m in self.resolved_mixes())

    @property
    def generated_only_count(self) -> int:
        """Images of the generated-only baseline (CAS): the largest generated part of any
        mix, i.e. the whole synthetic set the mixes use (8,000 in the paper), so that it
        is compared with the real-only baseline of the same count."""
        return max(m.n_generated for m in self.resolved_mixes())

    def resolved_mixes(self) -> list[StudyMix]:
        """The generated:real pairs, whichever form the profile used."""
        if self.mixes is not None:
            return list(self.mixes)
        assert self.total is not None and self.generated_shares is not None
        return [
            StudyMix(n_generated=round(s * self.total), n_real=self.total - round(s * self.total))
            for s in self.generated_shares
        ]


SLURM_TIME = r"^(\d+-)?\d+(:\d{1,2}){0,2}$"


def _sbatch_options(options: list[str]) -> list[str]:
    bad = [option for option in options if not option.startswith("-")]
    if bad:
        raise ValueError(f"sbatch options start with '-', e.g. --qos=normal; got {bad}")
    return options


SbatchOptions = Annotated[list[str], AfterValidator(_sbatch_options)]


class StageResources(_Section):
    """What one task of a stage asks the cluster for (each array task gets all of it)."""

    gpus: int = Field(0, ge=0, description="GPUs per task (--gres=gpu:N)")
    cpus: int = Field(1, ge=1, description="CPU cores per task; also its OMP_NUM_THREADS")
    mem: str | None = Field(
        None, pattern=r"^\d+[KMGT]?$", description="memory per task, e.g. 64G (None: default)"
    )
    time: str | None = Field(
        None, pattern=SLURM_TIME, description="wall-time limit, e.g. 4:00:00 or 1-12:00:00"
    )
    partition: str | None = Field(None, description="this stage's partition (None: cluster's)")
    sbatch_options: SbatchOptions = Field([], description="more sbatch options for this stage")


class ClusterConfig(_Section):
    """`synthaug run --executor slurm`: one job array per stage, chained with afterok."""

    partition: str | None = Field(None, description="sbatch --partition (None: the default)")
    account: str | None = Field(None, description="sbatch --account (None: your default)")
    sbatch_options: SbatchOptions = Field(
        [], description="more sbatch options for every stage, e.g. ['--qos=normal']"
    )
    setup: list[str] = Field(
        [], description="shell lines each task runs first, e.g. ['module load cuda/12.4']"
    )
    generation_shards: int = Field(1, ge=1, description="array tasks per generation arm")
    max_parallel: int | None = Field(
        None, ge=1, description="array tasks of one stage running at once (None: no limit)"
    )
    poll_seconds: float = Field(10.0, gt=0, description="how often the runner asks squeue")
    lora: StageResources = StageResources()
    generate: StageResources = StageResources()
    classify: StageResources = StageResources()
    analysis: StageResources = StageResources()
    book: StageResources = StageResources()

    def resources(self, stage: str) -> StageResources:
        return getattr(self, stage)


class StudyConfig(_Section):
    """A whole study; every stage reads its own section."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    output_dir: str = "runs"
    dataset: DatasetConfig
    splits: SplitsConfig
    generator: GeneratorConfig
    generation: GenerationConfig
    classifier: ClassifierConfig
    study: StudySection
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _family_fits(self) -> StudyConfig:
        """The arms and guidance the generator family has (`synthaug.families`)."""

        family = FAMILIES[self.generator.family]
        if "img2img" in self.generation.arms and family.no_img2img:
            raise ValueError(
                f"generation.arms: {family.name} has no img2img pipeline ({family.no_img2img}); "
                "use [lora, base]"
            )
        if self.generation.true_cfg_scale != 1 and family.no_true_cfg:
            raise ValueError(
                f"generation.true_cfg_scale: {family.name} {family.no_true_cfg}; "
                "leave true_cfg_scale at 1"
            )
        return self

    @property
    def run_dir(self) -> Path:
        """Where every stage of this study writes: <output_dir>/<name>."""
        return resolve_path(self.output_dir) / self.name

    _generator_seed: int = PrivateAttr(0)

    @property
    def generator_seed(self) -> int:
        """The generator seed this config makes and reads (`at_generator_seed`)."""
        return self._generator_seed

    def at_generator_seed(self, seed: int | None) -> StudyConfig:
        """This study as generator seed `seed` makes it: the LoRA seeded generator.seed +
        seed, its images generation.seed + seed, both in that seed's folders (`paths`).
        None or 0: the study itself (also from another seed's config)."""
        seed = seed or 0
        if seed == self._generator_seed:
            return self
        if seed and seed not in self.study.generator_seeds:
            raise ConfigError(f"generator seed {seed} is not in {self.study.generator_seeds}")
        delta = seed - self._generator_seed
        shifted = self.model_copy(
            update={
                "generator": self.generator.model_copy(
                    update={"seed": self.generator.seed + delta}
                ),
                "generation": self.generation.model_copy(
                    update={"seed": self.generation.seed + delta}
                ),
            }
        )
        shifted._generator_seed = seed
        return shifted

    def first_generator(self) -> StudyConfig:
        """The study at its first generator seed: whose LoRA and synthetic sets the
        report's figures and distribution metrics show."""
        return self.at_generator_seed(self.study.generator_seeds[0])

    @property
    def paths(self) -> RunPaths:
        """Every path of the run folder (the generator seed's LoRA and synthetic sets)."""
        return RunPaths(self.run_dir, self._generator_seed)


SECTIONS = tuple(StudyConfig.model_fields)
TINY = "tiny"


def parse_value(text: str) -> Any:
    """A command-line value as papermill reads `-p` values: YAML scalars, else the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of `raw` with dotted keys (`generator.lora.rank`) set to new values."""
    result = json.loads(json.dumps(raw))
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {dotted!r}: {where!r} is a value, not a section")
            node = child
        node[parts[-1]] = parse_value(value) if isinstance(value, str) else value
    return result


def _allowed_keys(loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the section at `loc` (for an 'unknown key' message)."""
    model: Any = StudyConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = field.annotation
        for candidate in getattr(model, "__args__", (model,)):
            inner = getattr(candidate, "__args__", (candidate,))[0]
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                model = inner
                break
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
    return sorted(model.model_fields)


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        key = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{key}: unknown key{hint}")
        elif item["type"] == "missing":
            lines.append(f"{key}: required but missing")
        elif isinstance(item["input"], Mapping):  # a section's check: its message names keys
            lines.append(item["msg"].removeprefix("Value error, "))
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: got {item['input']!r}; {message}")
    return "invalid study config:\n  " + "\n  ".join(lines)


def build_config(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> StudyConfig:
    """Validate a raw mapping (plus dotted overrides) into a `StudyConfig`."""
    merged = apply_overrides(raw, overrides or {})
    try:
        return StudyConfig.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = resolve_path(path)
    if not path.is_file():
        raise ConfigError(f"profile {path} does not exist; the profiles are in params/*.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"profile {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"profile {path} must be a mapping of sections, got {type(raw).__name__}")
    return raw


@dataclass(frozen=True)
class Profile:
    """A profile read with its overrides: `sections` (what papermill injects into the
    notebooks), `overrides` (as given, values parsed) and the validated `cfg`."""

    sections: dict[str, Any]
    overrides: dict[str, Any]
    cfg: StudyConfig


def load_profile(
    path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
) -> Profile:
    """Load `params/<profile>.yaml` and apply dotted overrides: the one way every command
    reads a profile."""
    given = {k: parse_value(v) if isinstance(v, str) else v for k, v in (overrides or {}).items()}
    sections = apply_overrides(read_yaml(path), given)
    return Profile(sections, given, build_config(sections))


def load_config(
    path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
) -> StudyConfig:
    """The validated config of `params/<profile>.yaml` with dotted overrides."""
    return load_profile(path, overrides).cfg


def from_notebook(namespace: Mapping[str, Any]) -> StudyConfig:
    """The config of a notebook run: the sections papermill injected (`-f params/x.yaml`),
    or the `profile` path when none were, plus the notebook's `overrides` dict. A run
    starts here in each kernel: the expected library messages are filtered from now on."""
    quiet.install()
    sections = {key: namespace[key] for key in SECTIONS if namespace.get(key) is not None}
    overrides = namespace.get("overrides") or {}
    seed = namespace.get("generator_seed")
    if sections:
        return build_config(sections, overrides).at_generator_seed(seed)
    profile = namespace.get("profile")
    if not profile:
        raise ConfigError(
            "no study config: run with `papermill <nb> <out> -f params/<profile>.yaml` "
            "or set `profile` in the parameters cell"
        )
    return load_config(profile, overrides).at_generator_seed(seed)


# Settings that change nothing a stage makes, left out of the hashes and the settings
# records, so that switching them keeps finished outputs; tests/test_config.py names the
# test that proves each. (`compile` rounds differently and `preload` draws the flips
# otherwise than DataLoader workers do: both are in the hashes.)
RUN_ONLY = frozenset({"report_to"})


def identity(section: BaseModel) -> dict[str, Any]:
    """A section's settings that decide what a stage makes (all but `RUN_ONLY`)."""
    fields = type(section).model_fields.keys()
    return section.model_dump(mode="json", exclude=set(RUN_ONLY & fields))


def config_hash(section: BaseModel, *extra: Any) -> str:
    """A short, stable hash of a config section (for cache keys and resume checks)."""
    payload = json.dumps([identity(section), *extra], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
