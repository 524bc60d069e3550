"""Flow matching, the same for every generator family: prompts, times and the training loss.

Used by the base's pretraining, the LoRA and generation alike:
- `prompt_for`: the class prompt (the class name as words in the profile's template);
- `encode_class_prompts`: each class prompt encoded once by the family's text encoders,
  the empty prompt last (the unconditional caption of caption dropout and CFG);
- `sample_sigmas`: flow-matching times (diffusers' density sampling, optionally shifted
  by the family scheduler's `shift`);
- `flow_matching_loss`: the rectified-flow velocity loss, as FLUX models are trained;
- `step_seed`: the seed of one optimizer step's noise, from a run's seed.
"""

from __future__ import annotations

import torch

from synthaug.config import StudyConfig
from synthaug.families import family_named
from synthaug.vocab import caption_words


def step_seed(seed: int, step: int) -> int:
    """The seed of optimizer step `step` of a run seeded `seed` (noise, times, dropout)."""
    return seed * 1_000_003 + step


def prompt_for(cfg: StudyConfig, label: str) -> str:
    """The class's prompt: its `dataset.class_words`, else its name written as words
    (`golfcourse` as `golf course`), the same from a folder name or a hub ClassLabel."""
    words = cfg.dataset.class_words.get(label) or caption_words(label)
    return cfg.generation.prompt_template.format(class_name=words)


@torch.no_grad()
def encode_class_prompts(cfg: StudyConfig, pipe, labels: list[str]) -> dict[str, torch.Tensor]:
    """Each class prompt (classes sorted) encoded once, and each label's row among them."""
    classes = sorted(set(labels))
    encoded = family_named(cfg.generator.family).encode_prompts(
        pipe, [prompt_for(cfg, c) for c in classes], cfg.generator.max_sequence_length
    )
    index = {label: i for i, label in enumerate(classes)}
    device = encoded["prompt_embeds"].device
    return {"prompt_index": torch.tensor([index[x] for x in labels], device=device), **encoded}


def sample_sigmas(kind: str, batch: int, generator: torch.Generator, shift: float) -> torch.Tensor:
    """Flow-matching times in (0, 1), drawn on the CPU: logit-normal (SD3/FLUX trainers),
    uniform, or logit-normal shifted toward noise by the scheduler's `shift`."""
    # deferred: diffusers takes seconds to import; only the generator's stages need it
    from diffusers.training_utils import compute_density_for_timestep_sampling

    scheme = "none" if kind == "uniform" else "logit_normal"
    sigmas = compute_density_for_timestep_sampling(
        scheme, batch, logit_mean=0.0, logit_std=1.0, generator=generator
    )
    if kind == "shifted_sigmoid":
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return sigmas


def flow_matching_loss(
    transformer,
    cache: dict[str, torch.Tensor],
    rows: torch.Tensor,
    seed: int,
    cfg: StudyConfig,
    caption_dropout: float = 0.0,
    part: tuple[int, int] = (0, 1),
) -> torch.Tensor:
    """The rectified-flow loss for one batch of cached model-space latents, each caption
    replaced by the empty one (the prompt tensors' last row) with probability
    `caption_dropout`.

    Noise, times and dropout come from a CPU generator seeded by `seed` (the same
    numbers on any device, so a resumed run is bit-identical), then move to the cache's
    device. `part = (i, n)`: process i of n data-parallel ones takes every n-th image of
    the batch, with the noise, time and dropout the whole batch drew for it."""
    family = family_named(cfg.generator.family)
    generator = torch.Generator().manual_seed(seed)
    x0 = cache["latents"][rows.to(cache["latents"].device)]
    batch = len(x0)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    sigmas = sample_sigmas(
        cfg.generator.timestep_sampling, batch, generator, family.scheduler["shift"]
    ).to(x0.device)
    prompts = cache["prompt_index"][rows.to(cache["prompt_index"].device)]
    if caption_dropout > 0:
        dropped = torch.rand(batch, generator=generator) < caption_dropout
        empty = len(cache["prompt_embeds"]) - 1
        prompts = torch.where(dropped.to(prompts.device), empty, prompts)
    mine = slice(part[0], None, part[1])
    x0, noise, sigmas, prompts = x0[mine], noise[mine], sigmas[mine], prompts[mine]
    noisy = (1 - sigmas.view(-1, 1, 1, 1)) * x0 + sigmas.view(-1, 1, 1, 1) * noise
    text = {key: cache[key][prompts] for key in family.text_keys}
    prediction = family.predict(transformer, noisy, sigmas, text, cfg.generator.guidance_scale)
    target = family.pack(noise - x0)
    return torch.nn.functional.mse_loss(prediction.float(), target.to(prediction.device).float())
