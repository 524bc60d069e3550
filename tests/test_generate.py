import csv
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from synthaug import filtering, generate
from synthaug.data import DataError, prepare_data
from synthaug.generate import (
    batches_of,
    generate_images,
    list_jobs,
    parse_shard,
    regenerate_one,
)
from synthaug.io import SettingsMismatch
from synthaug.lora import train_lora

from .conftest import load_pipeline, smoke_config

# alpha != rank: the generator must scale the LoRA by alpha / rank as training did
ALPHA = {"generator.lora.alpha": 8}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke study with its LoRA trained once for this module."""
    root = tmp_path_factory.mktemp("gen")
    train_lora(smoke_config(root, **ALPHA))
    return root


def fresh(trained, tmp_path, **overrides):
    """A study reusing the module's LoRA but generating into `tmp_path`."""
    import shutil

    cfg = smoke_config(tmp_path, **ALPHA, **overrides)
    shutil.copytree(
        trained / "smoke",
        cfg.run_dir,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("generated"),
    )
    return cfg


def manifest_rows(cfg, arm: str = "lora") -> list[dict]:
    with open(cfg.paths.arm_manifest(arm), newline="") as handle:
        return list(csv.DictReader(handle))


def test_plan_is_class_balanced_with_per_image_seeds(tmp_path) -> None:
    cfg = smoke_config(tmp_path, **{"generation.count": 22})
    jobs = list_jobs(cfg, ["a", "b", "c", "d", "e"])
    assert Counter(j.label for j in jobs) == {"a": 5, "b": 5, "c": 4, "d": 4, "e": 4}
    assert len({j.seed for j in jobs}) == 22
    assert jobs == list_jobs(cfg, ["a", "b", "c", "d", "e"])
    assert jobs[0].file == "a/00000.png" and jobs[0].prompt == "an aerial image of a"


def test_shards_are_disjoint_and_cover_the_set(tmp_path) -> None:
    jobs = list_jobs(smoke_config(tmp_path), ["a", "b", "c"])
    parts = [sum(batches_of(jobs, 3, (i, 3)), []) for i in range(3)]
    assert sorted((j.label, j.index) for part in parts for j in part) == sorted(
        (j.label, j.index) for j in jobs
    )
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) == (0, 1)
    with pytest.raises(ValueError, match="write it as i/n"):
        parse_shard("two")
    with pytest.raises(ValueError, match="need 0 <= i < n"):
        parse_shard("4/4")


def test_generates_every_class_then_nothing_on_rerun(trained, tmp_path) -> None:
    cfg = fresh(trained, tmp_path)
    summary = generate_images(cfg)
    assert summary["generated_now"] == 20 and summary["complete"]
    rows = manifest_rows(cfg)
    assert Counter(r["label"] for r in rows) == dict.fromkeys(
        ["agricultural", "beach", "forest", "freeway", "harbor"], 4
    )
    for row in rows:
        with Image.open(cfg.paths.generated / row["file"]) as image:
            assert image.size == (32, 32) and image.mode == "RGB"
    assert {r["steps"] for r in rows} == {"4"} and len({r["lora_sha256"] for r in rows}) == 1
    assert generate_images(cfg)["generated_now"] == 0


def test_one_image_regenerated_alone_equals_the_batch_result(trained, tmp_path) -> None:
    cfg = fresh(trained, tmp_path)
    generate_images(cfg)
    alone = regenerate_one(cfg, "forest", 3)
    assert alone == (cfg.paths.generated / "forest/00003.png").read_bytes()


def test_corrupt_or_missing_images_are_regenerated(trained, tmp_path) -> None:
    cfg = fresh(trained, tmp_path)
    generate_images(cfg)
    before = {r["file"]: r["sha256"] for r in manifest_rows(cfg)}
    victim = cfg.paths.generated / "beach/00001.png"
    victim.write_bytes(victim.read_bytes()[:50])
    (cfg.paths.generated / "harbor/00000.png").unlink()
    summary = generate_images(cfg)
    # beach/00001 is in the first batch of 8, harbor/00000 in the last batch of 4
    assert summary["generated_now"] == 8 + 4
    assert {r["file"]: r["sha256"] for r in manifest_rows(cfg)} == before


def test_interrupted_run_resumes_to_the_same_set(trained, tmp_path, monkeypatch) -> None:
    whole = fresh(trained, tmp_path / "whole")
    generate_images(whole)
    cut = fresh(trained, tmp_path / "cut")
    calls = {"n": 0}
    real_render = generate.render

    def render_then_die(pipe, cfg, jobs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed while the second batch is in flight
        return real_render(pipe, cfg, jobs)

    monkeypatch.setattr(generate, "render", render_then_die)
    with pytest.raises(KeyboardInterrupt):
        generate_images(cut)
    monkeypatch.setattr(generate, "render", real_render)
    assert not (cut.paths.generated / "manifest.csv").exists()
    assert generate_images(cut)["generated_now"] == 20 - cut.generation.batch_size
    assert manifest_rows(cut) == manifest_rows(whole)


def test_sharded_runs_merge_into_the_single_run_set(trained, tmp_path) -> None:
    single = fresh(trained, tmp_path / "single")
    generate_images(single)
    sharded = fresh(trained, tmp_path / "sharded", **{"generation.batch_size": 8})
    assert not generate_images(sharded, "1/2")["complete"]
    assert generate_images(sharded, "0/2")["complete"]
    assert manifest_rows(sharded) == manifest_rows(single)


def test_other_settings_never_overwrite_a_set(trained, tmp_path) -> None:
    cfg = fresh(trained, tmp_path)
    generate_images(cfg)
    other = smoke_config(tmp_path, **ALPHA, **{"generation.steps": 5})
    assert generate.is_complete(cfg) and not generate.is_complete(other)  # the study reruns it
    with pytest.raises(SettingsMismatch, match=r"other settings \(steps differ"):
        generate_images(other)


def test_missing_lora_is_explained(tmp_path, ucmerced) -> None:
    with pytest.raises(DataError, match="run the LoRA stage"):
        generate_images(smoke_config(tmp_path))


def test_generator_has_the_lora_fused_at_its_scale(trained, tmp_path) -> None:
    import torch
    from safetensors.torch import load_file

    from synthaug.pretrain import base_model_source

    cfg = fresh(trained, tmp_path, **{"generation.lora_scale": 0.5})
    pipe, _, _ = generate.load_generator(cfg)
    base = load_pipeline(base_model_source(cfg)).transformer.state_dict()
    lora = load_file(str(cfg.paths.lora_weights))
    scaling = cfg.generator.lora.alpha / cfg.generator.lora.rank
    assert scaling == 2
    fused = pipe.transformer.state_dict()
    modules = [key[len("transformer.") : -len(".lora_A.weight")] for key in lora if "lora_A" in key]
    assert "transformer_blocks.0.attn.to_q" in modules  # attention too, not only the MLPs
    assert len(modules) == len(lora) // 2
    for name in modules:
        prefix = f"transformer.{name}"
        delta = lora[f"{prefix}.lora_B.weight"] @ lora[f"{prefix}.lora_A.weight"]
        assert delta.abs().max() > 0  # trained
        torch.testing.assert_close(
            fused[f"{name}.weight"], base[f"{name}.weight"] + 0.5 * scaling * delta
        )
    assert not any("lora" in key for key in fused)


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def test_base_arm_is_the_same_prompts_and_seeds_without_the_lora(trained, tmp_path) -> None:
    from synthaug.pretrain import base_model_source

    cfg = fresh(trained, tmp_path, **{"generation.arms": "[lora, base]"})
    generate_images(cfg)
    summary = generate_images(cfg, arm="base")
    assert summary["arm"] == "base" and summary["generated_now"] == 20
    folder = cfg.paths.arm("base")
    assert folder.name == "generated-base" and generate.is_complete(cfg, "base")
    settings = json.loads((folder / "settings.json").read_text())
    assert settings["arm"] == "base" and settings["lora_sha256"] == ""
    rows = manifest_rows(cfg, "base")
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in manifest_rows(cfg)]
    assert [r["seed"] for r in rows] == [r["seed"] for r in manifest_rows(cfg)]
    # the plain base pipeline makes the same image; the LoRA's set differs from it (a
    # little: the smoke LoRA trains 2 short epochs)
    plain = load_pipeline(base_model_source(cfg))
    job = list_jobs(cfg, prepare_data(cfg).classes)[0]
    [image] = generate.denoise(plain, cfg, [job])
    assert np.abs(np.asarray(image, dtype=np.float32) - _pixels(folder / job.file)).max() <= 1
    differ = [
        np.abs(_pixels(folder / r["file"]) - _pixels(cfg.paths.generated / r["file"])).mean()
        for r in rows
    ]
    assert max(differ) > 0
    with pytest.raises(ValueError, match="arm 'img2img' is not in generation.arms"):
        generate_images(cfg, arm="img2img")


def test_img2img_arm_starts_each_image_from_a_lora_image_of_its_class(
    trained, tmp_path, monkeypatch
) -> None:
    cfg = fresh(trained, tmp_path, **{"generation.arms": "[lora, img2img]"})
    generate_images(cfg)
    generate_images(cfg, arm="img2img")
    manifest = prepare_data(cfg)
    jobs = list_jobs(cfg, manifest.classes)
    refs = [record.ref for record in generate.init_images(cfg, jobs)]
    lora = {r.ref: r.label for r in manifest.split("lora")}
    assert [lora[ref] for ref in refs] == [j.label for j in jobs]  # of the image's own class
    assert len(set(refs)) == len(lora)  # 4 images per class, 4 LoRA images: each seeds one
    settings = json.loads((cfg.paths.arm("img2img") / "settings.json").read_text())
    assert settings["img2img_strength"] == 0.6 and settings["lora_sha256"]
    assert settings["lora_sha256"] == manifest_rows(cfg, "img2img")[0]["lora_sha256"]
    pipe, _, _ = generate.load_generator(cfg, arm="img2img")
    assert type(pipe).__name__ == "FluxImg2ImgPipeline"
    # the image is the pipeline's output from its start image: another start, another image
    [same] = generate.denoise(pipe, cfg, jobs[:1])
    saved = _pixels(cfg.paths.arm("img2img") / jobs[0].file)
    assert np.abs(np.asarray(same, dtype=np.float32) - saved).max() <= 1
    other = next(r for r in manifest.split("lora") if r.label != jobs[0].label)
    monkeypatch.setattr(generate, "init_images", lambda _cfg, _jobs: [other])
    [moved] = generate.denoise(pipe, cfg, jobs[:1])
    assert np.abs(np.asarray(moved, dtype=np.float32) - saved).mean() > 1
    # and it is not the text-to-image image of the same seed
    assert np.abs(saved - _pixels(cfg.paths.generated / jobs[0].file)).mean() > 1


def test_filtered_arm_keeps_the_best_scored_of_candidates_the_lora_arm_begins(
    trained, tmp_path
) -> None:
    """3 candidates per kept image: the LoRA arm's 4 per class (reused, not made again)
    and 8 more per class from the same seed sequence; a scorer that saw only the LoRA
    split keeps the 4 it scores highest per class."""
    arms = {"generation.arms": "[lora, filtered]", "generation.oversample": 3}
    cfg = fresh(trained, tmp_path, **arms)
    generate_images(cfg)
    summary = generate_images(cfg, arm="filtered")
    assert summary["generated_now"] == 40 and summary["complete"]
    assert generate.is_complete(cfg, "filtered") and summary["candidates"] == 60
    candidates = filtering.read_candidates(cfg)
    lora = {(r["label"], int(r["file"][-9:-4])): r for r in manifest_rows(cfg)}
    reused = [c for c in candidates if c["file"].startswith("generated/")]
    assert {(c["label"], c["index"]): c["sha256"] for c in reused} == {
        key: row["sha256"] for key, row in lora.items()
    }
    for c in candidates:  # one seed sequence: (global seed, class, index)
        assert int(c["seed"]) == generate.image_seed(cfg.generation.seed, c["label"], c["index"])
    assert len({c["score"] for c in candidates}) > 10  # scored, not a constant
    for label in {c["label"] for c in candidates}:
        mine = [c for c in candidates if c["label"] == label]
        kept = [c["score"] for c in mine if c["kept"]]
        assert len(kept) == 4 and min(kept) >= max(c["score"] for c in mine if not c["kept"])
        assert sorted(c["rank"] for c in mine if c["kept"]) == [1, 2, 3, 4]
    # the arm's set: the kept images, copied byte for byte, with their score and rank
    rows = manifest_rows(cfg, "filtered")
    folder = cfg.paths.arm("filtered")
    assert len(rows) == 20 and all(
        generate.sha256_file(folder / r["file"]) == r["sha256"] for r in rows
    )
    kept = {c["sha256"]: c for c in candidates if c["kept"]}
    assert {r["sha256"] for r in rows} == set(kept)
    assert all(int(r["rank"]) == kept[r["sha256"]]["rank"] for r in rows)
    # nothing is made again on a rerun
    assert generate_images(cfg, arm="filtered")["generated_now"] == 0


def test_the_scorer_sees_only_the_lora_split(trained, tmp_path) -> None:
    """The scorer's training images are the LoRA split's, disjoint from the test split
    (and from the pool the cells draw from): it cannot have seen a test image."""
    cfg = fresh(trained, tmp_path, **{"generation.arms": "[lora, filtered]"})
    generate_images(cfg)
    generate_images(cfg, arm="filtered")
    scorer = json.loads((cfg.paths.arm("filtered") / "scorer.json").read_text())
    seen = {(split, ref) for split, ref, _ in scorer["training_images"]}
    manifest = prepare_data(cfg)
    assert seen == {("lora", r.ref) for r in manifest.split("lora")}
    for other in ("test", "pool"):
        assert not {r.ref for r in manifest.split(other)} & {ref for _, ref in seen}
