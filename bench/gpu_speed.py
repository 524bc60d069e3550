"""Before and after, in one run: the paper profile's stages eager with prodigyopt (today)
against synthaug's Prodigy, regional compilation and the preloaded classifier cell.
`bench/gpu_flux.py` calls these and writes the figures; `--tiny` runs them on a CPU.

- LoRA: the profile's settings (batch 1, fp32 LoRA under bf16 autocast, Prodigy, no
  checkpointing) on fixed random latents and prompt embeddings with the flow-matching
  loss, `curve_steps` steps per variant from the same initial LoRA; samples/s after the
  first `warmup` steps (where compilation happens: timed apart), and the mean loss of each
  50-step window against the eager run's.
- Generation: the transformer's Euler sampling at the profile's batch and steps from the
  same noise, eager and compiled, decoded by one random-weight FLUX VAE; the largest
  difference in grey levels.
- Classifier cell: `fine_tune` itself on a folder of real-sized JPEGs through synthaug's
  manifest and `ImageLoader`, one epoch per path; the cell's `epochs` are projected from
  it (the preloaded path decodes once, the DataLoader path every epoch).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from synthaug.runtime.compiling import compile_blocks, repeated_blocks


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def uncompile(model: torch.nn.Module) -> None:
    """Undo `compile_blocks`: the blocks run eagerly again."""
    for block in repeated_blocks(model):
        block._compiled_call_impl = None


def training_data(config: dict, tokens: tuple[int, int], device, count: int = 16) -> dict:
    """`count` fixed random samples: latents, prompt embeddings, pooled embeddings."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    n_image, n_text = tokens

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device, torch.bfloat16)

    return {
        "x0": draw(count, n_image, config["in_channels"]),
        "text": draw(count, n_text, config["joint_attention_dim"]),
        "pooled": draw(count, config["pooled_projection_dim"]),
    }


def flow_loss(model, data: dict, step: int, device) -> torch.Tensor:
    """The rectified-flow loss of sample `step mod count`, its noise and time seeded by
    `step` (the same in every variant)."""
    from diffusers import FluxPipeline

    row = step % len(data["x0"])
    generator = torch.Generator(device="cpu").manual_seed(step)
    x0 = data["x0"][row : row + 1]
    noise = torch.randn(x0.shape, generator=generator).to(device, torch.bfloat16)
    sigma = torch.sigmoid(torch.randn(1, generator=generator)).to(device, torch.bfloat16)
    side = int(x0.shape[1] ** 0.5)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        prediction = model(
            hidden_states=(1 - sigma) * x0 + sigma * noise,
            timestep=sigma,
            guidance=torch.ones(1, device=device),
            pooled_projections=data["pooled"][row : row + 1],
            encoder_hidden_states=data["text"][row : row + 1],
            txt_ids=torch.zeros(data["text"].shape[1], 3, device=device, dtype=torch.bfloat16),
            img_ids=FluxPipeline._prepare_latent_image_ids(1, side, side, device, torch.bfloat16),
            return_dict=False,
        )[0]
    return torch.nn.functional.mse_loss(prediction.float(), (noise - x0).float())


def lora_variant(model, data, device, optimizer_name, compile_mode, steps, warmup) -> dict:
    """`steps` LoRA steps from the LoRA's current weights; its losses and speed."""
    from prodigyopt import Prodigy as Reference

    from synthaug.prodigy import Prodigy

    make = {"prodigy": Prodigy, "prodigy_reference": Reference}[optimizer_name]
    trained = [p for p in model.parameters() if p.requires_grad]
    start_weights = [p.detach().clone() for p in trained]
    optimizer = make(trained, lr=1.0, use_bias_correction=True)
    row: dict = {"optimizer": optimizer_name, "compile": compile_mode}
    reset_peak(device)
    try:
        begin = time.perf_counter()
        compile_blocks(model, compile_mode)
        model.train()
        losses = []
        for step in range(steps):
            if step == warmup:
                sync(device)
                row["first_steps_s"] = time.perf_counter() - begin  # compiling included
                timed = time.perf_counter()
            loss = flow_loss(model, data, step, device)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        sync(device)
        row["samples_per_s"] = (steps - warmup) / (time.perf_counter() - timed)
        row["losses"] = [float(x) for x in torch.stack(losses).cpu()]
        row["peak_memory_gib"] = peak_gib(device)
    except Exception as error:  # a mode that does not hold: say why, measure the rest
        row["failed"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"
    finally:
        uncompile(model)
        with torch.no_grad():
            for p, initial in zip(trained, start_weights, strict=True):
                p.copy_(initial)
    return row


def windows(losses: list[float], size: int = 50) -> list[float]:
    return [float(np.mean(losses[i : i + size])) for i in range(0, len(losses), size)]


def lora_before_after(model, config, tokens, device, steps: int, warmup: int) -> dict:
    """Today's LoRA step against each change alone and together; the loss-curve check."""
    data = training_data(config, tokens, device)
    variants = [
        ("prodigy_reference", "none", steps),  # today
        ("prodigy", "none", max(steps // 8, warmup + 5)),
        ("prodigy", "regional", steps),
        ("prodigy", "regional-cudagraphs", max(steps // 8, warmup + 5)),
    ]
    rows = [lora_variant(model, data, device, o, c, n, warmup) for o, c, n in variants]
    before, after = rows[0], rows[2]
    result: dict = {"variants": rows}
    if "losses" in before and "losses" in after:
        pairs = zip(windows(after["losses"]), windows(before["losses"]), strict=True)
        gaps = [abs(a - b) / b for a, b in pairs]
        result["loss_window_gap_max"] = max(gaps)
        result["speed_up"] = after["samples_per_s"] / before["samples_per_s"]
    return result


def text_token_speeds(model, config, n_image, lengths, device, steps, warmup, mode) -> dict:
    """LoRA samples/s at other prompt lengths, with the faster step (recompiles per shape)."""
    speeds = {}
    for n_text in lengths:
        data = training_data(config, (n_image, n_text), device)
        row = lora_variant(model, data, device, "prodigy", mode, steps, warmup)
        speeds[str(n_text)] = row.get("samples_per_s", row.get("failed"))
    return speeds


@torch.no_grad()
def sample(model, config, tokens, batch: int, steps: int, device) -> torch.Tensor:
    """Euler sampling of `steps` flow-matching steps from seeded noise (transformer only)."""
    from diffusers import FluxPipeline

    n_image, n_text = tokens
    generator = torch.Generator(device="cpu").manual_seed(0)
    latents = torch.randn(batch, n_image, config["in_channels"], generator=generator)
    text = torch.randn(batch, n_text, config["joint_attention_dim"], generator=generator)
    pooled = torch.randn(batch, config["pooled_projection_dim"], generator=generator)
    latents, text, pooled = (t.to(device, torch.bfloat16) for t in (latents, text, pooled))
    side = int(n_image**0.5)
    ids = FluxPipeline._prepare_latent_image_ids(batch, side, side, device, torch.bfloat16)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    model.eval()
    for i in range(steps):
        t = torch.full((batch,), float(sigmas[i]), device=device, dtype=torch.bfloat16)
        velocity = model(
            hidden_states=latents,
            timestep=t,
            guidance=torch.full((batch,), 3.5, device=device),
            pooled_projections=pooled,
            encoder_hidden_states=text,
            txt_ids=torch.zeros(n_text, 3, device=device, dtype=torch.bfloat16),
            img_ids=ids,
            return_dict=False,
        )[0]
        latents = latents + float(sigmas[i + 1] - sigmas[i]) * velocity
    return latents


@torch.no_grad()
def to_grey_levels(vae, latents: torch.Tensor, n_image: int) -> torch.Tensor:
    """Decode packed latents with `vae` to uint8 images."""
    from diffusers import FluxPipeline

    side = int(n_image**0.5) * 2 * 8
    unpacked = FluxPipeline._unpack_latents(latents, side, side, 8)
    images = vae.decode(unpacked.to(vae.dtype), return_dict=False)[0]
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def generation_before_after(model, config, tokens, batch, steps, device, tiny: bool) -> dict:
    """Eager against regional compilation: images per second and the grey-level gap."""
    from diffusers import AutoencoderKL

    model.disable_adapters()  # the study fuses the LoRA: the base's speed
    vae_config = {"latent_channels": 16, "block_out_channels": (128, 256, 512, 512)}
    if tiny:
        vae_config |= {"block_out_channels": (8, 8, 8, 8), "norm_num_groups": 4}
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        **vae_config,
    ).to(device, torch.bfloat16)
    result = {}
    images = {}
    for mode in ("none", "regional"):
        reset_peak(device)
        begin = time.perf_counter()
        compile_blocks(model, mode)
        sample(model, config, tokens, batch, 1, device)  # compiles here
        sync(device)
        first = time.perf_counter() - begin
        begin = time.perf_counter()
        latents = sample(model, config, tokens, batch, steps, device)
        sync(device)
        seconds = time.perf_counter() - begin
        images[mode] = to_grey_levels(vae, latents, tokens[0])
        result[mode] = {
            "images_per_s": batch / seconds,
            "first_call_s": first,
            "peak_memory_gib": peak_gib(device),
        }
        uncompile(model)
    model.enable_adapters()
    gap = (images["none"].int() - images["regional"].int()).abs()
    result["grey_level_gap_max"] = int(gap.max())
    result["speed_up"] = result["regional"]["images_per_s"] / result["none"]["images_per_s"]
    return result


def jpeg_folder(root: Path, classes: int, per_class: int, size: int = 256) -> Path:
    """`classes` x `per_class` JPEGs of `size` px (smooth random colour fields, as
    compressible as aerial scenes roughly are), an ImageFolder the study can read."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = root / f"class{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            coarse = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
            image = Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)
            image.save(folder / f"{i:04d}.jpg", quality=90)
    return root


def classifier_before_after(profile: str, images: int, test: int, tiny: bool) -> dict:
    """`fine_tune` on `images` JPEGs: the DataLoader path for one epoch (it decodes every
    epoch), the preloaded compiled path for one and two (decoding and compiling once);
    the profile's cell projected from them. ViT-base (or a tiny ViT), random weights."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from synthaug.config import load_config

    classes, work = 38, Path(tempfile.mkdtemp(prefix="synthaug-cell-"))
    per_class = -(-(images + test) // classes)
    folder = jpeg_folder(work / "jpegs", classes, per_class)
    vit = ViTConfig(num_labels=classes)
    if tiny:
        vit = ViTConfig(
            num_labels=classes,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ViTForImageClassification(vit).save_pretrained(work / "vit")
    ViTImageProcessor().save_pretrained(work / "vit")
    base = {
        "output_dir": str(work / "runs"),
        "dataset.path": str(folder),
        "dataset.local": None,
        "dataset.hub_id": None,
        "splits.unit": "per_class",
        "splits.lora": 0,
        "splits.pool": per_class - test // classes,
        "splits.test": test // classes,
        "classifier.model": str(work / "vit"),
    }
    after = {"classifier.preload": True, "classifier.compile": "regional"}
    runs = {}
    for name, epochs, overrides, count in (
        ("before", 1, {"classifier.preload": False}, images),
        ("first", 1, after, images // 10),  # cold compile; later cells hit its cache
        ("after", 1, after, images),
        ("after", 2, after, images),
    ):
        cfg = load_config(profile, {**base, **overrides, "classifier.epochs": epochs})
        runs[(name, epochs)] = time_cell(cfg, count)
    epochs = load_config(profile).classifier.epochs
    cells = {name: row["cell_s"] for (name, n), row in runs.items() if n == 1}
    per_epoch = runs[("after", 2)]["cell_s"] - cells["after"]
    once = cells["after"] - per_epoch  # decoding, loading, compiling from the cache
    return {
        "images": images,
        "runs": {f"{name}_{n}_epochs": row for (name, n), row in runs.items()},
        "projected_cell_s": {  # the DataLoader path decodes every epoch: linear in epochs
            "before": epochs * cells["before"],
            "after": once + epochs * per_epoch,
            # the cold compile's cost, bounded above by the whole small cold first run
            "first_cell_extra_s": cells["first"],
        },
        "speed_up": epochs * cells["before"] / (once + epochs * per_epoch),
        "epochs": epochs,
    }


def time_cell(cfg, images: int) -> dict:
    """`fine_tune` on the first `images` pool images, tested on the test split."""
    from synthaug.classify.backbone import Backbone
    from synthaug.classify.fine_tune import fine_tune
    from synthaug.data import ImageLoader, prepare_data

    manifest = prepare_data(cfg)
    label = {c: i for i, c in enumerate(manifest.classes)}
    train, test = manifest.split("pool")[:images], manifest.split("test")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    reset_peak(device)
    begin = time.perf_counter()
    _, history = fine_tune(
        Backbone(cfg, manifest.classes),
        (train, [label[r.label] for r in train]),
        (test, [label[r.label] for r in test]),
        ImageLoader(cfg.dataset),
        cfg,
        seed=0,
    )
    sync(device)
    return {
        "cell_s": time.perf_counter() - begin,
        "peak_memory_gib": peak_gib(device),
        "test_accuracy": history[-1]["test_accuracy"],
    }


def family_step_speeds(family_name: str, model, shapes: dict, device, steps: int, warmup: int):
    """Any generator family through its own interface (`synthaug.families`): LoRA samples/s
    and peak memory of the study's step (synthaug's Prodigy, bf16 autocast, batch 1), then
    seconds and peak memory of one sampling step at the generation batch, with as many
    transformer passes as the family's guidance makes (classifier-free: 2)."""
    from synthaug.families import family_named
    from synthaug.prodigy import Prodigy

    family = family_named(family_name)
    generator = torch.Generator(device="cpu").manual_seed(0)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).to(device, torch.bfloat16)

    def text(batch: int) -> dict:
        return {key: draw(batch, *shapes[key]) for key in family.text_keys}

    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = Prodigy(trained, lr=1.0, use_bias_correction=True)
    model.train()
    reset_peak(device)
    for step in range(steps + warmup):
        if step == warmup:
            sync(device)
            begin = time.perf_counter()
        x0, noise = draw(1, *shapes["latents"]), draw(1, *shapes["latents"])
        sigma = torch.rand(1, generator=generator).to(device, torch.bfloat16)
        noisy = (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * noise
        with torch.autocast(device.type, dtype=torch.bfloat16):
            prediction = family.predict(model, noisy, sigma, text(1), 1.0)
        loss = torch.nn.functional.mse_loss(prediction.float(), family.pack(noise - x0).float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    lora = {
        "samples_per_s": steps / (time.perf_counter() - begin),
        "peak_memory_gib": peak_gib(device),
    }
    model.eval()
    batch, passes = shapes["generation_batch"], shapes["passes_per_step"]
    latents, prompts = draw(batch, *shapes["latents"]), text(batch)
    reset_peak(device)
    with torch.no_grad():
        for call in range(2):  # the first call warms up
            if call == 1:
                sync(device)
                begin = time.perf_counter()
            for _ in range(passes):
                family.predict(model, latents, torch.full((batch,), 0.5), prompts, 1.0)
    sync(device)
    sampling = {
        "batch": batch,
        "passes_per_step": passes,
        "step_s": time.perf_counter() - begin,
        "peak_memory_gib": peak_gib(device),
    }
    return {"family": family_name, "lora": lora, "sampling_step": sampling}
