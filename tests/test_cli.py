import json

from synthaug.cli import main


def test_validate_prints_resolved_config_with_overrides(capsys) -> None:
    assert main(["validate", "-f", "params/smoke.yaml", "-p", "generator.epochs", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["generator"]["epochs"] == 3


def test_bad_override_exits_2_with_the_key(capsys) -> None:
    assert main(["validate", "-f", "params/smoke.yaml", "-p", "generator.lora.rank", "0"]) == 2
    assert "generator.lora.rank: got 0" in capsys.readouterr().err


def test_run_writes_the_manifest(tmp_path, capsys, ucmerced) -> None:
    assert main(["run", "-f", "params/smoke.yaml", "-p", "output_dir", str(tmp_path)]) == 0
    assert (tmp_path / "smoke" / "data" / "manifest.csv").is_file()
    assert "5 classes" in capsys.readouterr().out
