from pathlib import Path

import pytest
import yaml

from synthaug.config import (
    ConfigError,
    StudyConfig,
    apply_overrides,
    build_config,
    from_notebook,
    load_config,
)
from synthaug.sources import locate

from .conftest import ROOT

PROFILES = sorted((ROOT / "params").glob("*.yaml"))
PROFILE_NAMES = [p.stem for p in PROFILES if p.stem != "paper_table2"]


def raw(name: str = "smoke") -> dict:
    return yaml.safe_load((ROOT / "params" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_every_profile_validates(name: str) -> None:
    cfg = load_config(ROOT / "params" / f"{name}.yaml")
    assert isinstance(cfg, StudyConfig)
    assert cfg.name == name
    assert cfg.study.resolved_mixes()


def test_profiles_are_the_four_the_project_promises() -> None:
    assert set(PROFILE_NAMES) == {
        "paper",
        "paper-flux2-klein",
        "ucmerced-cpu",
        "smoke",
        "smoke-flux2-klein",
        "gpu-smoke",
    }


def _differences(a: dict, b: dict, prefix: str = "") -> set[str]:
    keys = set(a) | set(b)
    found = set()
    for key in keys:
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            found |= _differences(x, y, f"{prefix}{key}.")
        elif x != y:
            found.add(prefix + key)
    return found


def test_klein_profiles_change_only_the_family_and_what_does_not_carry_over() -> None:
    def dumped(name: str) -> dict:
        return load_config(ROOT / "params" / f"{name}.yaml").model_dump(mode="json")

    assert _differences(dumped("paper"), dumped("paper-flux2-klein")) == {
        "name",
        "generator.family",
        "generator.base_model",
        "generation.steps",
        "generation.guidance_scale",
    }
    assert _differences(dumped("smoke"), dumped("smoke-flux2-klein")) == {
        "name",
        "generator.family",
        "generation.guidance_scale",
        "generation.arms",
    }


def test_paper_profile_is_the_paper() -> None:
    cfg = load_config(ROOT / "params" / "paper.yaml")
    assert cfg.dataset.hub_id == "blanchon/PatternNet"
    assert cfg.generator.base_model == "black-forest-labs/FLUX.1-dev"
    assert (cfg.splits.lora, cfg.splits.test, cfg.splits.unit) == (780, 2000, "total")
    g = cfg.generator
    assert (g.epochs, g.repeats, g.optimizer, g.lr_scheduler) == (6, 5, "prodigy", "cosine")
    assert cfg.generation.count == 8000 and cfg.generator.resolution == 256
    assert cfg.classifier.model == "google/vit-base-patch16-224-in21k"
    pairs = [(m.n_generated, m.n_real) for m in cfg.study.resolved_mixes()]
    assert pairs == [(g, 10000 - g) for g in range(2000, 8001, 1000)]


def test_paper_table_has_a_row_per_paper_mix() -> None:
    table = yaml.safe_load((ROOT / "params" / "paper_table2.yaml").read_text())
    cfg = load_config(ROOT / "params" / "paper.yaml")
    pairs = [(m.n_generated, m.n_real) for m in cfg.study.resolved_mixes()]
    assert [(r["n_generated"], r["n_real"]) for r in table["rows"]] == pairs


def test_bad_value_names_key_value_and_rule() -> None:
    with pytest.raises(ConfigError) as error:
        build_config(raw(), {"generator.lora.rank": -3})
    message = str(error.value)
    assert "generator.lora.rank" in message and "-3" in message and "greater than 0" in message


def test_bad_choice_lists_allowed_values() -> None:
    allowed = r"'prodigy', 'prodigy_reference' or 'adamw'"
    with pytest.raises(ConfigError, match=rf"generator\.optimizer.*'sgd'.*{allowed}"):
        build_config(raw(), {"generator.optimizer": "sgd"})


def test_unknown_key_is_an_error_listing_allowed_keys() -> None:
    with pytest.raises(ConfigError) as error:
        build_config(raw(), {"generator.lora.rnak": 4})
    message = str(error.value)
    assert "generator.lora.rnak: unknown key" in message
    assert "rank" in message and "alpha" in message


def test_unknown_top_level_section() -> None:
    with pytest.raises(ConfigError, match="classifer: unknown key; allowed keys here: .*classif"):
        build_config({**raw(), "classifer": {}})


def test_missing_section_is_named() -> None:
    data = raw()
    del data["splits"]
    with pytest.raises(ConfigError, match="splits: required but missing"):
        build_config(data)


def test_prompt_template_needs_class_keyword() -> None:
    with pytest.raises(ConfigError, match=r"generation\.prompt_template.*\{class_name\}"):
        build_config(raw(), {"generation.prompt_template": "an aerial image"})


def test_generation_arms_start_with_the_lora_once() -> None:
    assert build_config(raw(), {"generation.arms": "[lora, base]"}).generation.arms == [
        "lora",
        "base",
    ]
    for arms in ("[base]", "[lora, base, base]"):
        with pytest.raises(ConfigError, match="generation.arms must start with `lora`"):
            build_config(raw(), {"generation.arms": arms})
    with pytest.raises(ConfigError, match="generation.arms"):
        build_config(raw(), {"generation.arms": "[lora, inpaint]"})


def test_sample_efficiency_counts_increase() -> None:
    with pytest.raises(ConfigError, match="must increase from 1 or more"):
        build_config(raw(), {"study.sample_efficiency.real_per_class": "[5, 2]"})


def test_paper_profile_runs_the_paper_arm_only() -> None:
    cfg = load_config(ROOT / "params" / "paper.yaml")
    assert cfg.generation.arms == ["lora"] and cfg.study.sample_efficiency is None


def test_dataset_needs_a_source() -> None:
    with pytest.raises(ConfigError, match="give a source"):
        build_config(raw(), {"dataset.local": None, "dataset.hub_id": None})


def test_study_needs_one_mix_form() -> None:
    with pytest.raises(ConfigError, match="study.mixes or study.generated_shares"):
        build_config(raw(), {"study.mixes": [{"n_generated": 1, "n_real": 1}]})


def test_dotted_overrides_parse_values_like_papermill() -> None:
    cfg = build_config(
        raw(),
        {
            "generator.epochs": "3",
            "generator.gradient_checkpointing": "true",
            "study.seeds": "[4, 5]",
            "generation.prompt_template": "a satellite photo of {class_name}",
        },
    )
    assert cfg.generator.epochs == 3 and cfg.generator.gradient_checkpointing is True
    assert cfg.study.seeds == [4, 5]
    assert cfg.generation.prompt_template.startswith("a satellite")


def test_override_through_a_value_is_rejected() -> None:
    with pytest.raises(ConfigError, match="'generator.epochs' is a value, not a section"):
        apply_overrides(raw(), {"generator.epochs.x": 1})


def test_overrides_do_not_mutate_the_input() -> None:
    data = raw()
    apply_overrides(data, {"generator.epochs": 9})
    assert data["generator"]["epochs"] == 2


def test_config_is_frozen() -> None:
    cfg = build_config(raw())
    with pytest.raises(ValueError):
        cfg.generator.epochs = 4  # type: ignore[misc]


def test_from_notebook_uses_injected_sections_then_overrides() -> None:
    namespace = {**raw(), "overrides": {"generator.epochs": 7}, "unrelated": 1}
    assert from_notebook(namespace).generator.epochs == 7


def test_from_notebook_falls_back_to_profile_path() -> None:
    cfg = from_notebook({"profile": "params/smoke.yaml", "dataset": None})
    assert cfg.name == "smoke"


def test_from_notebook_without_config_explains_how() -> None:
    with pytest.raises(ConfigError, match="papermill .* -f params/<profile>.yaml"):
        from_notebook({"profile": None})


def test_missing_profile_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("params/nope.yaml")


def test_relative_paths_resolve_from_project_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNTHAUG_ROOT")
    monkeypatch.chdir(ROOT / "tests")
    cfg = load_config("params/smoke.yaml")
    assert cfg.run_dir == ROOT / "runs" / "smoke"
    assert Path(locate(cfg.dataset).where).is_dir()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"generation.arms": ["lora", "img2img"]},
            "generation.arms: flux2-klein has no img2img pipeline (Flux2KleinPipeline's `image` "
            "conditions on a reference, it does not start from it); use [lora, base]",
        ),
        (
            {"generation.true_cfg_scale": 2.0},
            "generation.true_cfg_scale: flux2-klein guides with generation.guidance_scale",
        ),
    ],
)
def test_what_a_family_lacks_is_refused_with_the_reason(overrides, message) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(ROOT / "params" / "smoke-flux2-klein.yaml", overrides)
    assert message in str(caught.value)
    load_config(ROOT / "params" / "smoke.yaml", overrides)  # FLUX.1 has both


# Each setting left out of the hashes, and the test that proves it changes no output.
RUN_ONLY_PROOFS = {
    "report_to": "tests/test_lora.py::test_tensorboard_holds_the_loss_learning_rate_and_grids",
}


def test_every_setting_left_out_of_the_hashes_is_proved_to_change_no_output() -> None:
    """A setting in `config.RUN_ONLY` keeps finished outputs when switched, so it must
    change none: each names the test that proves it, in every mode the profiles use."""
    import re

    from synthaug.config import RUN_ONLY

    assert set(RUN_ONLY) == set(RUN_ONLY_PROOFS), "name the proof of each RUN_ONLY setting"
    for proof in RUN_ONLY_PROOFS.values():
        path, name = proof.split("::")
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.MULTILINE), proof


def test_compile_and_preload_change_the_hash() -> None:
    """Compiled kernels round differently; preloaded flips differ from DataLoader workers'."""
    from synthaug.config import config_hash

    cfg = load_config(ROOT / "params" / "paper.yaml")
    for section, field in (
        (cfg.classifier, "preload"),
        (cfg.classifier, "compile"),
        (cfg.generator, "compile"),
        (cfg.generation, "compile"),
    ):
        flipped = not getattr(section, field) if field == "preload" else "none"
        assert config_hash(section) != config_hash(section.model_copy(update={field: flipped}))
