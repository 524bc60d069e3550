"""FLUX.1 (`FluxPipeline`): CLIP pooled + T5 sequence prompts, a 16-channel VAE whose latents
are shifted and scaled, 2x2-packed tokens, a guidance embedding (FLUX.1-dev is
guidance-distilled), and `FluxImg2ImgPipeline` for img2img."""

from __future__ import annotations

from typing import Any

import torch

from synthaug.families.base import GeneratorFamily
from synthaug.vocab import train_clip_tokenizer, train_t5_tokenizer

# The FlowMatchEulerDiscreteScheduler settings of FLUX.1-dev; the tiny base uses them too,
# and the shifted time sampling of training takes its `shift` from here.
FLUX_SCHEDULER = {
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}
# Attention projections of both streams: the same names in FLUX.1's and FLUX.2's blocks.
ATTENTION_TARGETS = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
)
TARGETS = (
    *ATTENTION_TARGETS,
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
    "proj_mlp",
    "proj_out",
)


def tiny_blocks(cfg) -> dict:
    """The transformer arguments the tiny config sets alike for every FLUX family."""
    return {
        "patch_size": 1,
        "num_layers": cfg.num_layers,
        "num_single_layers": cfg.num_single_layers,
        "attention_head_dim": cfg.attention_head_dim,
        "num_attention_heads": cfg.num_attention_heads,
    }


def _rope_axes(head_dim: int) -> tuple[int, int, int]:
    return head_dim // 4, 3 * head_dim // 8, 3 * head_dim // 8


def _tiny_text_encoders(cfg, clip_tokenizer, t5_tokenizer) -> tuple:
    # deferred: transformers takes seconds to import; only a backbone or text encoder needs it
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    heads = max(1, cfg.text_dim // 16)
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tokenizer),
            hidden_size=cfg.text_dim,
            intermediate_size=2 * cfg.text_dim,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=heads,
            max_position_embeddings=77,
            projection_dim=cfg.text_dim,
            bos_token_id=clip_tokenizer.bos_token_id,
            eos_token_id=clip_tokenizer.eos_token_id,
            pad_token_id=clip_tokenizer.pad_token_id,
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=cfg.text_dim,
            d_kv=cfg.text_dim // heads,
            d_ff=2 * cfg.text_dim,
            num_layers=cfg.text_layers,
            num_heads=heads,
            pad_token_id=t5_tokenizer.pad_token_id,
            eos_token_id=t5_tokenizer.eos_token_id,
        )
    )
    return clip, t5


def _tiny_vae(cfg, latent_channels: int, cls_name: str = "AutoencoderKL", **extra):
    # deferred: diffusers takes seconds to import; only the generator's stages need it
    import diffusers

    blocks = len(cfg.vae_channels)
    return getattr(diffusers, cls_name)(
        in_channels=3,
        out_channels=3,
        latent_channels=latent_channels,
        block_out_channels=tuple(cfg.vae_channels),
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        layers_per_block=1,
        norm_num_groups=cfg.vae_norm_groups,
        use_quant_conv=False,
        use_post_quant_conv=False,
        **extra,
    )


class Flux1(GeneratorFamily):
    name = "flux1"
    title = "FLUX.1"
    pipeline_class = "FluxPipeline"
    transformer_class = "FluxTransformer2DModel"
    vae_class = "AutoencoderKL"
    text_components = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
    text_keys = ("prompt_embeds", "pooled_prompt_embeds")
    default_targets = TARGETS
    scheduler = FLUX_SCHEDULER

    def tiny_pipeline(self, cfg) -> Any:
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

        torch.manual_seed(cfg.seed)
        clip_tokenizer = train_clip_tokenizer(cfg.vocab_size)
        t5_tokenizer = train_t5_tokenizer(cfg.vocab_size)
        clip, t5 = _tiny_text_encoders(cfg, clip_tokenizer, t5_tokenizer)
        vae = _tiny_vae(cfg, 16, scaling_factor=1.0, shift_factor=0.0)
        transformer = FluxTransformer2DModel(
            **tiny_blocks(cfg),
            in_channels=64,
            joint_attention_dim=cfg.text_dim,
            pooled_projection_dim=cfg.text_dim,
            guidance_embeds=True,
            axes_dims_rope=_rope_axes(cfg.attention_head_dim),
        )
        pipe = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
            vae=vae,
            text_encoder=clip,
            tokenizer=clip_tokenizer,
            text_encoder_2=t5,
            tokenizer_2=t5_tokenizer,
            transformer=transformer,
        )
        for module in (clip, t5, vae, transformer):
            module.eval()
        return pipe

    def encode_prompts(self, pipe, prompts: list[str], max_length: int) -> dict[str, torch.Tensor]:
        embeds, pooled, _ = pipe.encode_prompt(
            [*prompts, ""], prompt_2=None, max_sequence_length=max_length
        )
        return {"prompt_embeds": embeds.float(), "pooled_prompt_embeds": pooled.float()}

    def to_model_space(self, vae, latents: torch.Tensor) -> torch.Tensor:
        return (latents - vae.config.shift_factor) * vae.config.scaling_factor

    def fit_latent_stats(self, vae, latents: torch.Tensor) -> dict[str, Any]:
        shift, scale = latents.mean().item(), 1.0 / latents.std().item()
        vae.register_to_config(shift_factor=shift, scaling_factor=scale)
        return {"latent_shift": shift, "latent_scale": scale}

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        from diffusers import FluxPipeline

        return FluxPipeline._pack_latents(latents, *latents.shape)

    def predict(
        self, transformer, noisy: torch.Tensor, sigmas: torch.Tensor, text: dict, guidance: float
    ) -> torch.Tensor:
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        from diffusers import FluxPipeline

        batch, _, height, width = noisy.shape
        model = getattr(transformer, "module", transformer)  # DDP keeps the model in `.module`
        device, dtype = model.device, model.dtype
        scale = None
        if model.config.guidance_embeds:
            scale = torch.full((batch,), guidance, device=device)
        embeds = text["prompt_embeds"]
        return transformer(
            hidden_states=self.pack(noisy).to(device, dtype),
            timestep=sigmas.to(device, dtype),
            guidance=scale,
            pooled_projections=text["pooled_prompt_embeds"].to(device, dtype),
            encoder_hidden_states=embeds.to(device, dtype),
            txt_ids=torch.zeros(embeds.shape[1], 3, device=device, dtype=dtype),
            img_ids=FluxPipeline._prepare_latent_image_ids(
                batch, height // 2, width // 2, device, dtype
            ),
            return_dict=False,
        )[0]

    def generate(self, pipe, cfg, prompts: list[str], generators: list, output_type: str, **start):
        return pipe(
            prompts,
            true_cfg_scale=cfg.generation.true_cfg_scale,
            negative_prompt=[""] * len(prompts),
            **self.sampling_options(cfg, generators, output_type),
            **start,
        ).images

    def sample_latents(self, pipe, cfg, text: dict, empty: dict, generators: list) -> torch.Tensor:
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        from diffusers import FluxPipeline

        size, dtype = cfg.generator.resolution, pipe.vae.dtype
        latents = pipe(
            prompt_embeds=text["prompt_embeds"].to(dtype),
            pooled_prompt_embeds=text["pooled_prompt_embeds"].to(dtype),
            negative_prompt_embeds=empty["prompt_embeds"].to(dtype),
            negative_pooled_prompt_embeds=empty["pooled_prompt_embeds"].to(dtype),
            true_cfg_scale=cfg.generation.true_cfg_scale,
            **self.sampling_options(cfg, generators, "latent"),
        ).images
        latents = FluxPipeline._unpack_latents(latents, size, size, pipe.vae_scale_factor)
        return latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor

    def img2img(self, pipe):
        # deferred: diffusers takes seconds to import; only the generator's stages need it
        from diffusers import FluxImg2ImgPipeline

        return FluxImg2ImgPipeline.from_pipe(pipe)

    def is_img2img(self, pipe) -> bool:
        return type(pipe).__name__ == "FluxImg2ImgPipeline"
