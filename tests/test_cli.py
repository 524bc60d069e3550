import json

from synthaug.cli import main


def test_validate_prints_resolved_config_with_overrides(capsys) -> None:
    assert main(["validate", "-f", "params/smoke.yaml", "-p", "generator.epochs", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["generator"]["epochs"] == 3


def test_bad_override_exits_2_with_the_key(capsys) -> None:
    assert main(["validate", "-f", "params/smoke.yaml", "-p", "generator.lora.rank", "0"]) == 2
    assert "generator.lora.rank: got 0" in capsys.readouterr().err


def test_run_data_stage_writes_the_manifest(tmp_path, capsys, ucmerced) -> None:
    args = ["run", "-f", "params/smoke.yaml", "-p", "output_dir", str(tmp_path)]
    assert main([*args, "--stage", "data"]) == 0
    assert (tmp_path / "smoke" / "data" / "manifest.csv").is_file()
    assert "5 classes" in capsys.readouterr().out
    assert not (tmp_path / "smoke" / "cells").exists()


def test_run_trains_the_real_only_cells_and_resumes(tmp_path, capsys, ucmerced) -> None:
    args = ["run", "-f", "params/smoke.yaml", "-p", "output_dir", str(tmp_path)]
    assert main(args) == 0
    cells = sorted(p.name for p in (tmp_path / "smoke" / "cells").iterdir())
    assert cells == [f"gen0-real{n}-seed{s}" for n in (10, 15, 20, 5) for s in (0, 1)]
    assert "[8/8]" in capsys.readouterr().out
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "smoke").rglob("metrics.json")}
    assert main(args) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}
