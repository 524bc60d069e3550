import json

from synthaug.machinery.cli import main


def test_validate_prints_resolved_config_with_overrides(capsys) -> None:
    assert main(["validate", "-f", "params/smoke.yaml", "-p", "generator.epochs", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["generator"]["epochs"] == 3


def test_bad_override_exits_2_with_the_key(capsys) -> None:
    assert main(["validate", "-f", "params/smoke.yaml", "-p", "generator.lora.rank", "0"]) == 2
    assert "generator.lora.rank: got 0" in capsys.readouterr().err


def test_run_dry_run_prints_the_plan(tmp_path, capsys) -> None:
    args = ["run", "-f", "params/smoke.yaml", "-p", "output_dir", str(tmp_path), "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "63 tasks, 0 done, 63 to run" in out and "[todo] book" in out


def test_run_up_to_a_stage_then_resume(tmp_path, capsys, ucmerced) -> None:
    args = ["run", "-f", "params/smoke.yaml", "-p", "output_dir", str(tmp_path)]
    assert main([*args, "--stage", "lora"]) == 0
    assert (tmp_path / "smoke" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "smoke" / "notebooks" / "01_lora.ipynb").is_file()
    assert not (tmp_path / "smoke" / "generated").exists()
    capsys.readouterr()
    assert main([*args, "--stage", "lora"]) == 0
    assert "1 tasks, 1 done, 0 to run" in capsys.readouterr().out
