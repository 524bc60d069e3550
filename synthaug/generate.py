"""Stage 2: the synthetic sets: base pipeline + the study's LoRA, class-balanced and seeded.

One set per arm of `generation.arms`, each in its own folder (`cfg.paths.arm`): `lora` (the
paper's), `base` (the same prompts and seeds without the LoRA), `img2img` (with the
LoRA, each image started from a LoRA-training image of its class, `init_images`) and
`filtered` (`generation.oversample` candidates per image: the LoRA arm's images and
`candidate_jobs` more from the same seed sequence, of which `synthaug.filtering` keeps
the most recognisable per class).

Every image has its own seed derived from (global seed, class, index), so any image can be
regenerated alone. Jobs are cut into fixed batches of `generation.batch_size` in a fixed
order; shard i of n takes batches i, i+n, ..., so n processes produce exactly the images
of one run. The output is `generated/<class>/<index>.png` plus `generated/manifest.csv`.
A rerun skips images whose file matches its manifest row (sha256); a missing, corrupt or
truncated file is generated again; a set made with other settings is never overwritten.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from synthaug.config import StudyConfig
from synthaug.data import DataError, ImageLoader, ImageRecord, prepare_data, spread
from synthaug.families import family_named
from synthaug.filtering import FILTERED, SCORER_RULE, is_kept, keep_best
from synthaug.flow import prompt_for
from synthaug.io import (
    atomic_write_bytes,
    read_csv,
    read_json,
    record_settings,
    safetensors_digest,
    sha256_bytes,
    sha256_file,
    write_csv,
)
from synthaug.models import base_name, default_device, weight_dtype
from synthaug.paths import shard_manifest
from synthaug.pretrain import base_model_source
from synthaug.runtime import provenance
from synthaug.runtime.compiling import compile_blocks
from synthaug.runtime.progress import Progress

log = logging.getLogger(__name__)
FIELDS = (
    "file",
    "label",
    "prompt",
    "seed",
    "steps",
    "guidance",
    "lora_sha256",
    "family",
    "base_model",
    "sha256",
)

INIT_RULE = "LoRA-training image (index mod n) of the class, sorted by path"


@dataclass(frozen=True)
class Job:
    label: str
    index: int
    seed: int
    prompt: str

    @property
    def file(self) -> str:
        return f"{self.label}/{self.index:05d}.png"


def image_seed(global_seed: int, label: str, index: int) -> int:
    """A 63-bit seed for one image, fixed by (global seed, class, index)."""
    digest = hashlib.sha256(f"{global_seed}/{label}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def list_jobs(cfg: StudyConfig, classes: list[str]) -> list[Job]:
    """`generation.count` images spread evenly over classes (remainder alphabetical)."""
    return _jobs(cfg, classes, lambda count: range(count))


def candidate_jobs(cfg: StudyConfig, classes: list[str]) -> list[Job]:
    """The filtered arm's candidates beyond the LoRA arm's images: per class with n images,
    indices n .. oversample x n - 1 of the same (global seed, class, index) sequence, so the
    LoRA arm's set is their prefix and none of its images is made again."""
    k = cfg.generation.oversample
    return _jobs(cfg, classes, lambda count: range(count, k * count))


def _jobs(cfg: StudyConfig, classes: list[str], indices: Callable[[int], range]) -> list[Job]:
    """One job per class and index in `indices(the class's share of generation.count)`."""
    return [
        Job(label, index, image_seed(cfg.generation.seed, label, index), prompt_for(cfg, label))
        for label, count in spread(cfg.generation.count, classes).items()
        for index in indices(count)
    ]


def batches_of(jobs: list[Job], batch_size: int, shard: tuple[int, int]) -> list[list[Job]]:
    """This shard's fixed batches: batch b belongs to shard b % n."""
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= i < n")
    batches = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    return batches[index::count]


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n); None -> the whole set."""
    if not text:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"shard {text!r}: write it as i/n, e.g. 0/4") from None
    batches_of([], 1, (index, count))
    return index, count


def _settings(cfg: StudyConfig, source: str, lora_sha: str, arm: str) -> dict:
    g = cfg.generation
    arm_settings = {} if arm == "lora" else {"arm": arm}
    if arm == "img2img":
        arm_settings |= {"img2img_strength": g.img2img_strength, "init_images": INIT_RULE}
    if arm == FILTERED:
        arm_settings |= {"oversample": g.oversample, "scorer": SCORER_RULE}
    return {
        **arm_settings,
        "family": cfg.generator.family,
        "base_model": base_name(source),
        "lora_sha256": lora_sha,
        "count": g.count,
        "prompt_template": g.prompt_template,
        "steps": g.steps,
        "guidance_scale": g.guidance_scale,
        "true_cfg_scale": g.true_cfg_scale,
        "lora_scale": g.lora_scale,
        "seed": g.seed,
        "resolution": cfg.generator.resolution,
        "max_sequence_length": cfg.generator.max_sequence_length,
        "precision": cfg.generator.mixed_precision,
    }


def _read_rows(path: Path) -> dict[str, dict]:
    return {row["file"]: row for row in read_csv(path)} if path.exists() else {}


def _write_rows(path: Path, rows: dict[str, dict]) -> None:
    write_csv(path, FIELDS, ([rows[key][f] for f in FIELDS] for key in sorted(rows)))


def _is_done(out: Path, row: dict | None) -> bool:
    """The file exists and its bytes are the ones the manifest recorded."""
    path = out / row["file"] if row else None
    return bool(row) and path.is_file() and sha256_file(path) == row["sha256"]


def load_generator(
    cfg: StudyConfig, device: str | torch.device | None = None, arm: str = "lora"
) -> tuple:
    """The arm's pipeline, its base and its LoRA's digest ("" for `base`): the base with
    the study's LoRA loaded by the stock diffusers loader, then fused into the
    transformer's weights at `generation.lora_scale` and unloaded (the same images within
    one grey level, about 1.4x faster than with the adapter layers); for `img2img`, the
    family's img2img pipeline on the same components.

    Weights are held in the dtype of `generator.mixed_precision` (bf16 for the paper
    profile), on `device` (default: the first GPU, else the CPU); its transformer's
    blocks compiled as `generation.compile` says."""
    source = base_model_source(cfg)
    family = family_named(cfg.generator.family)
    pipe = family.load_pipeline(source, weight_dtype(cfg.generator.mixed_precision))
    digest = ""
    if arm != "base":
        weights = cfg.paths.lora_weights
        if not weights.is_file():
            raise DataError(
                f"no LoRA at {weights}: run the LoRA stage "
                "(notebooks/01_lora.ipynb or `synthaug run --stage lora`) first"
            )
        pipe.load_lora_weights(str(weights), adapter_name="study")
        pipe.fuse_lora(
            components=["transformer"],
            lora_scale=cfg.generation.lora_scale,
            adapter_names=["study"],
        )
        pipe.unload_lora_weights()
        digest = safetensors_digest(weights)
    if arm == "img2img":
        pipe = family.img2img(pipe)
    pipe.to(device or default_device())
    compile_blocks(pipe.transformer, cfg.generation.compile)  # after the LoRA is fused
    return pipe, source, digest


def init_images(cfg: StudyConfig, jobs: list[Job]) -> list[ImageRecord]:
    """Each img2img job's starting image: LoRA-training image `index mod n` of its class
    (the class's n LoRA images sorted by path), so every training image seeds as many."""
    lora = sorted(prepare_data(cfg).split("lora"), key=lambda r: r.ref)
    by_class: dict[str, list[ImageRecord]] = {}
    for record in lora:
        by_class.setdefault(record.label, []).append(record)
    return [by_class[job.label][job.index % len(by_class[job.label])] for job in jobs]


def denoise(pipe, cfg: StudyConfig, jobs: list[Job], output_type: str = "pil") -> list:
    """The pipeline's output for `jobs`, each from its own seeded CPU generator (the same
    starting noise on any device); an img2img pipeline starts from `init_images`."""
    family = family_named(cfg.generator.family)
    start = {}
    if family.is_img2img(pipe):
        load = ImageLoader(cfg.dataset)
        start = {
            "image": [load(record) for record in init_images(cfg, jobs)],
            "strength": cfg.generation.img2img_strength,
        }
    generators = [torch.Generator().manual_seed(job.seed) for job in jobs]
    prompts = [job.prompt for job in jobs]
    return family.generate(pipe, cfg, prompts, generators, output_type, **start)


def render(pipe, cfg: StudyConfig, jobs: list[Job]) -> list[bytes]:
    """PNG bytes of `jobs`."""
    encoded = []
    for image in denoise(pipe, cfg, jobs):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded


def task_name(arm: str, index: int = 0, count: int = 1) -> str:
    """The study's name of one generation task: its executed notebook and provenance."""
    name = "02_generate" if arm == "lora" else f"02_generate-{arm}"
    return f"{name}-shard{index}of{count}" if count > 1 else name


def generate_images(cfg: StudyConfig, shard: str | None = None, arm: str = "lora") -> dict:
    """Notebook 02's one call: generate (or finish) this shard of one arm's synthetic set;
    for the filtered arm, its candidates, then (once all exist) the images it keeps."""
    cfg.generation.check_arm(arm)
    index, count = parse_shard(shard)
    classes = prepare_data(cfg).classes
    out = cfg.paths.arm(arm)
    pipe, source, lora_sha = load_generator(cfg, arm=arm)
    settings = _settings(cfg, source, lora_sha, arm)
    record_settings(out / "settings.json", settings, str(out))
    if arm != FILTERED:
        jobs, shard_path = list_jobs(cfg, classes), cfg.paths.generated_shard(index, count, arm)
        made = _render_set(cfg, pipe, jobs, out, shard_path, (index, count), arm, settings)
        complete = merge_shards(out, jobs) is not None
        return {"arm": arm, **made, "complete": complete, "dir": str(out), "total": len(jobs)}
    candidates = out / "candidates"
    jobs = candidate_jobs(cfg, classes)
    shard_path = shard_manifest(candidates, index, count)
    made = _render_set(cfg, pipe, jobs, candidates, shard_path, (index, count), arm, settings)
    summary = {"arm": arm, **made, "complete": False, "dir": str(out), "total": len(jobs)}
    if merge_shards(candidates, jobs) is None:
        return summary  # another shard's candidates are still to come
    if not is_complete(cfg, "lora"):
        raise DataError(
            f"the filtered arm keeps from the LoRA arm's images as well as its own "
            f"{len(jobs)} candidates, and the LoRA arm's set at {cfg.paths.arm('lora')} is "
            "not complete: generate it first (`synthaug run --stage generate` makes the "
            "arms in order), then rerun this one"
        )
    return summary | {"complete": True} | keep_best(cfg, made["seconds"])


def _render_set(
    cfg: StudyConfig,
    pipe,
    jobs: list[Job],
    out: Path,
    shard_path: Path,
    shard: tuple[int, int],
    arm: str,
    settings: dict,
) -> dict:
    """Render this shard's batches of `jobs` that are not on disk yet into `out`, each
    row in the shard's manifest as soon as its batch is written; what it made and how fast."""
    index, count = shard
    rows = _read_rows(shard_path) | _read_rows(out / "manifest.csv")
    mine = batches_of(jobs, cfg.generation.batch_size, shard)
    todo = [batch for batch in mine if not all(_is_done(out, rows.get(j.file)) for j in batch)]
    done_rows = {j.file: rows[j.file] for batch in mine for j in batch if j.file in rows}
    if todo:
        provenance.record(cfg, task_name(arm, index, count))
    start = time.perf_counter()
    made = 0
    shard_text = f" (shard {index}/{count})" if count > 1 else ""
    arm_text = f" {arm}" if arm != "lora" else ""
    progress = Progress(sum(len(b) for b in todo), f"generate{arm_text}{shard_text}", "images")
    for batch in todo:
        for job, png in zip(batch, render(pipe, cfg, batch), strict=True):
            atomic_write_bytes(out / job.file, png)
            done_rows[job.file] = _row(cfg, job, settings, png)
        _write_rows(shard_path, done_rows)  # a kill loses at most the batch in flight
        made += len(batch)
        progress.update(len(batch), rate=f"{made / (time.perf_counter() - start):.2f} img/s")
    progress.close()
    elapsed = time.perf_counter() - start
    _write_rows(shard_path, done_rows)
    return {
        "generated_now": made,
        "shard": f"{index}/{count}",
        "seconds": elapsed,
        "images_per_s": made / elapsed if made else None,
    }


def _row(cfg: StudyConfig, job: Job, settings: dict, png: bytes) -> dict:
    """One image's manifest row: everything that makes it again, and its digest."""
    return {
        "file": job.file,
        "label": job.label,
        "prompt": job.prompt,
        "seed": job.seed,
        "steps": cfg.generation.steps,
        "guidance": cfg.generation.guidance_scale,
        "lora_sha256": settings["lora_sha256"],
        "family": cfg.generator.family,
        "base_model": settings["base_model"],
        "sha256": sha256_bytes(png),
    }


def merge_shards(out: Path, jobs: list[Job]) -> Path | None:
    """Once every job has a verified row in some shard manifest, write `manifest.csv`."""
    rows: dict[str, dict] = {}
    for path in sorted(out.glob("manifest.shard*of*.csv")):
        rows |= _read_rows(path)
    rows |= _read_rows(out / "manifest.csv")
    if not all(_is_done(out, rows.get(job.file)) for job in jobs):
        return None
    _write_rows(out / "manifest.csv", {job.file: rows[job.file] for job in jobs})
    return out / "manifest.csv"


def regenerate_one(cfg: StudyConfig, label: str, index: int, arm: str = "lora") -> bytes:
    """One image from its own seed, equal to the one the batch run wrote, byte for byte: it
    is rendered in its fixed batch (a batch of one can differ in the last float bits, and so
    in a PNG byte, for some transformers)."""
    pipe, _, _ = load_generator(cfg, arm=arm)
    jobs = list_jobs(cfg, prepare_data(cfg).classes)
    job = next(j for j in jobs if (j.label, j.index) == (label, index))
    batch = next(b for b in batches_of(jobs, cfg.generation.batch_size, (0, 1)) if job in b)
    return render(pipe, cfg, batch)[batch.index(job)]


def is_complete(cfg: StudyConfig, arm: str = "lora") -> bool:
    """The arm's whole set exists, made with the current settings and LoRA (none for
    `base`); the base is not checked (finding it may pretrain it). Cheap: no image hashing."""
    out = cfg.paths.arm(arm)
    settings_path = out / "settings.json"
    weights = cfg.paths.lora_weights
    if not ((out / "manifest.csv").exists() and settings_path.exists()):
        return False
    if arm != "base" and not weights.exists():
        return False
    digest = "" if arm == "base" else safetensors_digest(weights)
    expected = _settings(cfg, "", digest, arm)
    settings = read_json(settings_path)
    return (
        all(settings.get(k) == v for k, v in expected.items() if k != "base_model")
        and len(_read_rows(out / "manifest.csv")) == cfg.generation.count
        and (arm != FILTERED or is_kept(cfg))
    )
