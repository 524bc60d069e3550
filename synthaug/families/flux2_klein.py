"""FLUX.2 [klein] (`Flux2KleinPipeline`): Qwen3 hidden states (three layers stacked) as the
only prompt tensor, a 32-channel VAE whose latents are 2x2-patchified and normalised by the
VAE's own batch-norm statistics, 4-axis RoPE ids, and no guidance embedding in the base
models: their guidance is classifier-free (`guidance_scale`, two passes a step). Its
pipeline's `image` argument conditions on reference images rather than starting from
them, so this family has no img2img arm."""

from __future__ import annotations

from typing import Any

import torch

from synthaug.families.base import GeneratorFamily, text_layers
from synthaug.families.flux1 import ATTENTION_TARGETS, FLUX_SCHEDULER, _tiny_vae, tiny_blocks
from synthaug.vocab import train_qwen_tokenizer

TARGETS = (
    *ATTENTION_TARGETS,
    "ff.linear_in",
    "ff.linear_out",
    "ff_context.linear_in",
    "ff_context.linear_out",
    "attn.to_qkv_mlp_proj",  # the single-stream blocks' fused attention + MLP input
    "attn.to_out",
)


def _tiny_qwen3(cfg, tokenizer):
    # deferred: transformers takes seconds to import; only a backbone or text encoder needs it
    from transformers import Qwen3Config, Qwen3ForCausalLM

    heads = max(1, cfg.text_dim // 16)
    return Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=cfg.text_dim,
            intermediate_size=2 * cfg.text_dim,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            head_dim=cfg.text_dim // heads,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )


class Flux2Klein(GeneratorFamily):
    name = "flux2-klein"
    title = "FLUX.2 [klein]"
    pipeline_class = "Flux2KleinPipeline"
    transformer_class = "Flux2Transformer2DModel"
    vae_class = "AutoencoderKLFlux2"
    text_components = ("text_encoder", "tokenizer")
    text_keys = ("prompt_embeds",)
    default_targets = TARGETS
    no_img2img = "Flux2KleinPipeline's `image` conditions on a reference, it does not start from it"
    no_true_cfg = (
        "guides with generation.guidance_scale (classifier-free, against the empty prompt)"
    )
    scheduler = FLUX_SCHEDULER

    def tiny_pipeline(self, cfg) -> Any:
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        from diffusers import (
            FlowMatchEulerDiscreteScheduler,
            Flux2KleinPipeline,
            Flux2Transformer2DModel,
        )

        torch.manual_seed(cfg.seed)
        tokenizer = train_qwen_tokenizer(cfg.vocab_size)
        text_encoder = _tiny_qwen3(cfg, tokenizer)
        vae = _tiny_vae(cfg, 32, "AutoencoderKLFlux2")
        transformer = Flux2Transformer2DModel(
            **tiny_blocks(cfg),
            in_channels=128,
            joint_attention_dim=3 * cfg.text_dim,  # three hidden states stacked
            axes_dims_rope=(cfg.attention_head_dim // 4,) * 4,
            guidance_embeds=False,
        )
        pipe = Flux2KleinPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            transformer=transformer,
            is_distilled=False,
        )
        for module in (text_encoder, vae, transformer):
            module.eval()
        return pipe

    def encode_prompts(self, pipe, prompts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        embeds, _ = pipe.encode_prompt(
            [*prompts, ""],
            max_sequence_length=max_length,
            text_encoder_out_layers=text_layers(pipe.text_encoder),
        )
        return {"prompt_embeds": embeds.float()}

    @staticmethod
    def _bn_stats(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = vae.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
        return mean.to(like.device, like.dtype), std.to(like.device, like.dtype)

    def to_model_space(self, vae, latents: torch.Tensor) -> torch.Tensor:
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        from diffusers import Flux2KleinPipeline

        patches = Flux2KleinPipeline._patchify_latents(latents)
        mean, std = self._bn_stats(vae, patches)
        return (patches - mean) / std

    def fit_latent_stats(self, vae, latents: torch.Tensor) -> dict[str, Any]:
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        from diffusers import Flux2KleinPipeline

        patches = Flux2KleinPipeline._patchify_latents(latents).transpose(0, 1).flatten(1)
        mean, var = patches.mean(1), patches.var(1)
        with torch.no_grad():
            vae.bn.running_mean.copy_(mean)
            vae.bn.running_var.copy_(var)
        return {
            "latent_channel_mean_range": [mean.min().item(), mean.max().item()],
            "latent_channel_std_range": [var.sqrt().min().item(), var.sqrt().max().item()],
        }

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        from diffusers import Flux2KleinPipeline

        return Flux2KleinPipeline._pack_latents(latents)

    def predict(
        self, transformer, noisy: torch.Tensor, sigmas: torch.Tensor, text: dict, guidance: float
    ) -> torch.Tensor:
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        from diffusers import Flux2KleinPipeline

        model = getattr(transformer, "module", transformer)  # DDP keeps the model in `.module`
        device, dtype = model.device, model.dtype
        tokens = self.pack(noisy)
        embeds = text["prompt_embeds"]
        scale = None
        if model.config.guidance_embeds:
            scale = torch.full((len(noisy),), guidance, device=device)
        prediction = transformer(
            hidden_states=tokens.to(device, dtype),
            encoder_hidden_states=embeds.to(device, dtype),
            timestep=sigmas.to(device, dtype),
            img_ids=Flux2KleinPipeline._prepare_latent_ids(noisy).to(device),
            txt_ids=Flux2KleinPipeline._prepare_text_ids(embeds).to(device),
            guidance=scale,
            return_dict=False,
        )[0]
        return prediction[:, : tokens.shape[1]]

    def generate(self, pipe, cfg, prompts: list[str], generators: list, output_type: str, **start):
        if start:
            raise ValueError(f"{self.title} has no img2img arm")
        return pipe(
            prompt=prompts,
            text_encoder_out_layers=text_layers(pipe.text_encoder),
            **self.sampling_options(cfg, generators, output_type),
        ).images

    def sample_latents(self, pipe, cfg, text: dict, empty: dict, generators: list) -> torch.Tensor:
        dtype = pipe.vae.dtype
        return pipe(
            prompt_embeds=text["prompt_embeds"].to(dtype),
            negative_prompt_embeds=empty["prompt_embeds"].to(dtype),
            **self.sampling_options(cfg, generators, "latent"),
        ).images
