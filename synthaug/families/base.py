"""The interface every generator family implements, and the registry `family_named` reads."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

from synthaug.attention import avoid_cudnn_attention
from synthaug.runtime import quiet


class FamilyMismatchError(ValueError):
    """The base model is a pipeline of another family than `generator.family` says."""


class GeneratorFamily(ABC):
    """One diffusers pipeline family the study can adapt with a LoRA and sample from."""

    name: ClassVar[str]
    title: ClassVar[str]  # how the book and tables name it
    pipeline_class: ClassVar[str]  # the diffusers class of its text-to-image pipeline
    transformer_class: ClassVar[str]
    vae_class: ClassVar[str]
    text_components: ClassVar[tuple[str, ...]]  # pipeline parts only prompt encoding needs
    text_keys: ClassVar[tuple[str, ...]]  # the tensors `encode_prompts` returns
    default_targets: ClassVar[tuple[str, ...]]  # LoRA targets: attention + MLP, both streams
    lora_blocks: ClassVar[tuple[str, ...]] = ("transformer_blocks.", "single_transformer_blocks.")
    no_img2img: ClassVar[str | None] = None  # why it has no img2img arm, where it has none
    no_true_cfg: ClassVar[str | None] = None  # why true_cfg_scale must stay 1, where it must
    scheduler: ClassVar[dict[str, Any]]  # the tiny stand-in's flow-matching scheduler

    # loading ------------------------------------------------------------------------------
    def check_source(self, source: str | Path) -> None:
        """Stop with one message if `source`'s model_index.json names another pipeline."""
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        from diffusers import DiffusionPipeline

        self.check_class(DiffusionPipeline.load_config(str(source)).get("_class_name"), source)

    def check_class(self, found: str | None, source: str | Path) -> None:
        """Stop with one message if `found` (a model_index.json's `_class_name`) is another
        family's pipeline."""
        if found and found != self.pipeline_class:
            owner = next((f for f in FAMILIES.values() if f.pipeline_class == found), None)
            fix = f"set generator.family: {owner.name}" if owner else "use a supported base"
            raise FamilyMismatchError(
                f"generator.family is {self.name} ({self.pipeline_class}) but "
                f"{source} holds a {found}: {fix}"
            )

    def load_pipeline(self, source: str | Path, dtype: torch.dtype, **components: object):
        """The family's pipeline from the hub or a saved folder; `components` replace
        loaded parts (e.g. `transformer=` the one being trained, `text_encoder=None`)."""
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        import diffusers

        self.check_source(source)
        avoid_cudnn_attention()
        quiet.before_loading()
        cls = getattr(diffusers, self.pipeline_class)
        pipe = cls.from_pretrained(str(source), dtype=dtype, **components)
        pipe.set_progress_bar_config(disable=True)  # the stages show their own progress
        return pipe

    def load_transformer(self, source: str | Path, dtype: torch.dtype):
        """The transformer alone (the LoRA trains on it; no text encoder is loaded)."""
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        import diffusers

        self.check_source(source)
        avoid_cudnn_attention()
        cls = getattr(diffusers, self.transformer_class)
        return cls.from_pretrained(str(source), subfolder="transformer", dtype=dtype)

    def load_vae(self, source: str | Path):
        """The base's VAE alone (the analysis's VAE round trip)."""
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        import diffusers

        return getattr(diffusers, self.vae_class).from_pretrained(str(source), subfolder="vae")

    def targets(self, configured: list[str] | None) -> list[str]:
        """The LoRA's target suffixes: the profile's, else the family's default."""
        return list(configured or self.default_targets)

    def without_text_encoders(self) -> dict[str, None]:
        """`load_pipeline` components that leave the text encoders and tokenizers out."""
        return dict.fromkeys(self.text_components)

    def text_encoders(self, pipe) -> list[torch.nn.Module]:
        """The pipeline's text-encoder models (the tiny base may train them)."""
        return [getattr(pipe, n) for n in self.text_components if n.startswith("text_encoder")]

    @abstractmethod
    def tiny_pipeline(self, cfg) -> Any:
        """A random pipeline of this architecture, small enough for a CPU (`TinyFluxConfig`)."""

    # the training step --------------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, pipe, prompts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        """`text_keys` tensors of each prompt, then of the empty prompt (the last row)."""

    @abstractmethod
    def to_model_space(self, vae, latents: torch.Tensor) -> torch.Tensor:
        """VAE latents (the posterior's mode) as the transformer denoises them, (B, C, h, w)."""

    @abstractmethod
    def fit_latent_stats(self, vae, latents: torch.Tensor) -> dict[str, Any]:
        """Set a freshly trained VAE's latent normalisation from its latents; what was set."""

    @abstractmethod
    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) model-space latents as the transformer's token sequence."""

    @abstractmethod
    def predict(
        self, transformer, noisy: torch.Tensor, sigmas: torch.Tensor, text: dict, guidance: float
    ) -> torch.Tensor:
        """The transformer's velocity for noisy model-space latents at flow times `sigmas`,
        as packed tokens on the transformer's device (`text`: each row's `text_keys`)."""

    # saving and sampling ------------------------------------------------------------------
    def save_lora(self, folder: Path, layers: dict, metadata: dict) -> None:
        """The LoRA as the family pipeline's stock `load_lora_weights` reads it."""
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        import diffusers

        getattr(diffusers, self.pipeline_class).save_lora_weights(
            folder, transformer_lora_layers=layers, transformer_lora_adapter_metadata=metadata
        )

    @staticmethod
    def sampling_options(cfg, generators: list, output_type: str) -> dict:
        """The pipeline-call arguments every family's sampling shares, from the config."""
        size = cfg.generator.resolution
        return {
            "height": size,
            "width": size,
            "num_inference_steps": cfg.generation.steps,
            "guidance_scale": cfg.generation.guidance_scale,
            "max_sequence_length": cfg.generator.max_sequence_length,
            "generator": generators,
            "output_type": output_type,
        }

    @abstractmethod
    def generate(self, pipe, cfg, prompts: list[str], generators: list, output_type: str, **start):
        """The pipeline's images for `prompts` (`start`: img2img's image and strength)."""

    @abstractmethod
    def sample_latents(self, pipe, cfg, text: dict, empty: dict, generators: list) -> torch.Tensor:
        """Latents in the VAE's space, from cached prompt tensors (`text`, and `empty`
        for guidance), with whatever transformer the pipeline holds."""

    def img2img(self, pipe):
        """The img2img pipeline on the same components."""
        raise NotImplementedError(f"{self.title} has no img2img pipeline: {self.no_img2img}")

    def is_img2img(self, pipe) -> bool:
        """Whether `pipe` is this family's img2img pipeline (it takes a starting image)."""
        return False


def text_layers(text_encoder) -> tuple[int, ...]:
    """FLUX.2 [klein]'s three text-encoder hidden states (layers 9, 18, 27 of Qwen3), or
    for a shallower stand-in the same thirds of its depth."""
    depth = text_encoder.config.num_hidden_layers
    return (9, 18, 27) if depth >= 27 else (depth // 3 or 1, 2 * depth // 3 or 1, depth)


# Filled by `synthaug.families` once every family's module is imported.
FAMILIES: dict[str, GeneratorFamily] = {}
