"""`synthaug export`: the LoRA and a synthetic set as folders others load without synthaug."""

import pytest
from huggingface_hub import DatasetCard, ModelCard

from synthaug.data import DataError
from synthaug.machinery.cli import main
from synthaug.machinery.export import export_study
from synthaug.machinery.hub import ShareError, push

from .conftest import SMALL_SMOKE, beach_image, smoke_config


@pytest.fixture(scope="module")
def exported(small_local_study, tmp_path_factory):
    to = tmp_path_factory.mktemp("export")
    return small_local_study, export_study(small_local_study, to), to


def test_an_unfinished_study_names_the_missing_stage(tmp_path, ucmerced) -> None:
    with pytest.raises(DataError, match=r"not finished: its lora stage \(task 01_lora\)"):
        export_study(smoke_config(tmp_path, **SMALL_SMOKE), tmp_path / "out")


def test_the_synthetic_set_loads_as_an_imagefolder_with_its_classes(exported) -> None:
    from collections import Counter

    from datasets import load_dataset

    cfg, folders, _ = exported
    images = load_dataset("imagefolder", data_dir=str(folders.dataset))["train"]
    images = images.class_encode_column("label")
    names = images.features["label"].names
    assert names == sorted(cfg.dataset.classes)
    assert Counter(names[i] for i in images["label"]) == dict.fromkeys(names, 4)  # 20 images
    row = images[0]
    assert row["prompt"].startswith("an aerial image of ") and row["family"] == "flux1"
    assert {"seed", "steps", "guidance", "lora_sha256", "sha256"} <= set(row)


def test_the_cards_parse_and_declare_what_the_hub_needs(exported) -> None:
    from datasets import Features

    cfg, folders, _ = exported
    model = ModelCard.load(folders.lora / "README.md")
    assert model.data.library_name == "diffusers" and model.data.license == "mit"
    assert {"lora", "flux1", "text-to-image", "remote-sensing"} <= set(model.data.tags)
    assert "an aerial image of beach" in model.text and "samples/epoch_002.png" in model.text
    assert "generated only (CAS)" in model.text and "best mix" in model.text
    assert (folders.lora / "samples" / "epoch_002.png").is_file()
    card = DatasetCard.load(folders.dataset / "README.md")
    features = Features._from_yaml_list(card.data.dataset_info["features"])
    assert features["label"].names == sorted(cfg.dataset.classes)
    assert "synthetic" in card.data.tags and "These images are synthetic" in card.text
    assert "precision" in card.text and "coverage" in card.text


def test_the_stock_pipeline_loads_the_exported_lora(exported) -> None:
    from diffusers import FluxPipeline

    from synthaug.pretrain import base_model_source

    cfg, folders, _ = exported

    source = base_model_source(cfg)
    base = beach_image(FluxPipeline.from_pretrained(source))
    pipe = FluxPipeline.from_pretrained(source)
    pipe.load_lora_weights(str(folders.lora))
    assert pipe.get_list_adapters()["transformer"]
    assert (beach_image(pipe) - base).abs().max() > 0


def test_exporting_again_replaces_only_the_same_studys_export(exported, tmp_path) -> None:
    cfg, _, to = exported
    again = export_study(cfg, to)  # the same study and arm: replaced in place
    assert (again.dataset / "train" / "metadata.csv").is_file()
    import json

    from synthaug.machinery.export import MARKER

    marker = json.loads((to / MARKER).read_text())
    (to / MARKER).write_text(json.dumps({**marker, "study": "another"}))
    try:
        with pytest.raises(DataError, match="export of another study or arm"):
            export_study(cfg, to)  # never over another study's export
    finally:
        (to / MARKER).write_text(json.dumps(marker))


def test_push_without_a_token_or_offline_says_what_to_do(exported, monkeypatch, tmp_path) -> None:
    _, folders, _ = exported
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ShareError, match="HF_HUB_OFFLINE is set"):
        push(folders, "org/name", private=True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no stored token either
    with pytest.raises(ShareError, match="no Hugging Face token: run `hf auth login`"):
        push(folders, "org/name", private=True)


def test_dry_run_lists_each_upload_and_its_repo(exported, capsys) -> None:
    cfg, _, to = exported
    args = ["export", "-f", "params/smoke.yaml", "-p", "output_dir", cfg.output_dir]
    for key, value in SMALL_SMOKE.items():
        args += ["-p", key, value]
    assert main([*args, "--to", str(to), "--push", "org/name", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "model repo org/name (public): " in out and "dataset repo org/name (public): " in out
    assert "  README.md" in out and "  pytorch_lora_weights.safetensors" in out


def test_a_refused_upload_names_the_repo_and_the_fix(exported, monkeypatch) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    _, folders, _ = exported
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("synthaug.machinery.hub.get_token", lambda: "hf_a_token")

    def refuse(self, *args, **kwargs):
        import httpx

        response = httpx.Response(403, request=httpx.Request("POST", "https://huggingface.co"))
        raise HfHubHTTPError("403 Forbidden: no write access to org", response=response)

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    with pytest.raises(ShareError, match=r"refused the model repo org/name .*rerun the same"):
        push(folders, "org/name", private=False)
