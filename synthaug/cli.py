"""`synthaug`: validate a profile or run the study's stages from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from synthaug.config import ConfigError, StudyConfig, load_config
from synthaug.data import DataError
from synthaug.dinov2 import MissingBackboneError
from synthaug.study import STAGES, StudyError, run_study


def _overrides(pairs: Sequence[Sequence[str]]) -> dict[str, str]:
    return {key: value for key, value in pairs}


def _load(args: argparse.Namespace) -> StudyConfig:
    return load_config(args.file, _overrides(args.parameters))


def cmd_validate(args: argparse.Namespace) -> None:
    cfg = _load(args)
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))


def cmd_run(args: argparse.Namespace) -> None:
    run_study(args.file, _overrides(args.parameters), stage=args.stage, dry_run=args.dry_run)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="synthaug", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    for name, func, help_text in (
        ("run", cmd_run, "run the whole study through papermill, then build the book"),
        ("validate", cmd_validate, "check a profile and print the resolved config"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("-f", "--file", required=True, help="profile, e.g. params/smoke.yaml")
        sub.add_argument(
            "-p",
            "--parameters",
            nargs=2,
            action="append",
            default=[],
            metavar=("KEY", "VALUE"),
            help="override, dotted for nested keys: -p generator.epochs 3",
        )
        sub.set_defaults(func=func)
        if name == "run":
            sub.add_argument(
                "--stage",
                choices=STAGES,
                default=None,
                help="run up to and including this stage (default: all)",
            )
            sub.add_argument(
                "--dry-run", action="store_true", help="print the plan (done / to run) and stop"
            )
    return root


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except (ConfigError, DataError, MissingBackboneError, StudyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
