import csv
from collections import Counter

import pytest
from PIL import Image

from synthaug import generate
from synthaug.data import DataError
from synthaug.generate import (
    batches_of,
    generate_images,
    list_jobs,
    parse_shard,
    regenerate_one,
)
from synthaug.io import SettingsMismatch
from synthaug.lora import train_lora

from .conftest import smoke_config

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


def manifest_rows(cfg) -> list[dict]:
    with open(cfg.paths.generated / "manifest.csv", newline="") as handle:
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
    with pytest.raises(SettingsMismatch, match=r"other settings \(steps differ"):
        generate_images(smoke_config(tmp_path, **ALPHA, **{"generation.steps": 5}))


def test_missing_lora_is_explained(tmp_path, ucmerced) -> None:
    with pytest.raises(DataError, match="run the LoRA stage"):
        generate_images(smoke_config(tmp_path))


def test_generator_has_the_lora_fused_at_its_scale(trained, tmp_path) -> None:
    import torch
    from safetensors.torch import load_file

    from synthaug.data import prepare_data
    from synthaug.models import load_flux_pipeline
    from synthaug.pretrain import base_model_source

    cfg = fresh(trained, tmp_path, **{"generation.lora_scale": 0.5})
    classes = prepare_data(cfg).classes
    pipe, _, _ = generate.load_generator(cfg, classes)
    base = load_flux_pipeline(base_model_source(cfg)).transformer.state_dict()
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
