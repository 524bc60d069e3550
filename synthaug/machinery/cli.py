"""`synthaug`: validate a profile or run the study's stages from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from synthaug.checkpoint import CheckpointError
from synthaug.config import ConfigError, StudyConfig, load_config
from synthaug.data import DataError
from synthaug.dinov2 import MissingBackboneError
from synthaug.families import FamilyMismatchError
from synthaug.io import SettingsMismatch
from synthaug.machinery.browser import BrowserError, check_page, screenshot
from synthaug.machinery.export import export_study
from synthaug.machinery.hub import ShareError, plan_lines, push
from synthaug.machinery.lock import StudyBusy
from synthaug.machinery.ship import ShipError, ship_base
from synthaug.machinery.slurm import refuse_if_running, run_on_cluster, status_lines
from synthaug.machinery.stages import STAGE_NAMES
from synthaug.machinery.study import (
    RunStopped,
    StudyError,
    run_study,
    run_task,
    task_commands,
)
from synthaug.runtime import quiet
from synthaug.sources import SourceError


def _overrides(pairs: Sequence[Sequence[str]]) -> dict[str, str]:
    return {key: value for key, value in pairs}


def _load(args: argparse.Namespace) -> StudyConfig:
    return load_config(args.file, _overrides(args.parameters))


def cmd_validate(args: argparse.Namespace) -> None:
    cfg = _load(args)
    print(json.dumps(cfg.model_dump(mode="json"), indent=2))


def cmd_run(args: argparse.Namespace) -> None:
    if args.print_tasks:
        lines = task_commands(
            args.file, _overrides(args.parameters), stage=args.stage, rebuild=args.rebuild
        )
        for line in lines:
            print(line)
        return

    if args.executor == "slurm":
        if args.dry_run:
            raise ConfigError("--dry-run plans the study locally: leave out --executor slurm")
        run_on_cluster(args.file, _overrides(args.parameters), args.stage, args.rebuild)
        return
    refuse_if_running(_load(args))
    run_study(
        args.file,
        _overrides(args.parameters),
        stage=args.stage,
        dry_run=args.dry_run,
        verbose=args.verbose,
        rebuild=args.rebuild,
    )


def cmd_task(args: argparse.Namespace) -> None:
    run_task(args.file, _overrides(args.parameters), args.name, rebuild=args.rebuild)


def cmd_status(args: argparse.Namespace) -> None:

    for line in status_lines(_load(args)):
        print(line)


def cmd_check_report(args: argparse.Namespace) -> None:
    """Open the built report in headless Chromium; fail on a missing Table 2 or a broken
    figure; with `--screenshots DIR`, save the landing page and Figure 1 as PNGs."""

    cfg = _load(args)
    html = cfg.paths.book_index.parent
    if not cfg.paths.book_index.exists():
        raise DataError(f"no report at {cfg.paths.book_index}; run `synthaug run` first")
    page = check_page(html, "04_analysis.html")
    broken = [image["src"] for image in page["images"] if not image["ok"]]
    print(f"{page['title']}: {len(page['images'])} figures, {len(broken)} broken")
    if broken or "Table 2" not in page["text"]:
        raise DataError(f"the report's landing page is incomplete: broken {broken}")
    if args.screenshots:
        out = Path(args.screenshots)
        for name, shown in (
            ("landing.png", "04_analysis.html"),
            ("figure1.png", "02_generate.html"),
        ):
            print(screenshot(html, shown, out / name))


def cmd_export(args: argparse.Namespace) -> None:
    """The LoRA and one arm's synthetic set as loadable folders; optionally on the hub."""

    exported = export_study(_load(args), Path(args.to), args.arm)
    print(f"LoRA: {exported.lora}\nsynthetic set: {exported.dataset}")
    if args.push and args.dry_run:
        print("\n".join(plan_lines(exported, args.push, args.private)))
    elif args.push:
        for url in push(exported, args.push, args.private):
            print(f"uploaded: {url}")


def cmd_pretrain(args: argparse.Namespace) -> None:
    """Pretrain the profile's tiny base (resuming a stopped one) and ship it with its card."""
    overrides = "".join(f" -p {key} {value}" for key, value in args.parameters)
    command = f"synthaug pretrain -f {args.file}{overrides} --to {args.to}"
    print(ship_base(_load(args), Path(args.to), command))


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="synthaug", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    for name, func, help_text, options in (
        ("run", cmd_run, "run the whole study through papermill, then build the book", _run),
        ("validate", cmd_validate, "check a profile and print the resolved config", None),
        ("task", cmd_task, "run one task of the study by name (what a cluster job runs)", _task),
        ("status", cmd_status, "how far the study is: per stage, on the cluster or here", None),
        ("check-report", cmd_check_report, "open the built report in headless Chromium", _check),
        ("export", cmd_export, "write the LoRA and a synthetic set with cards; --push", _export),
        ("pretrain", cmd_pretrain, "pretrain the tiny base (resumable); write its card", _pretrain),
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
        if options:
            options(sub)
    return root


def _task(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--name", required=True, help="a task, as --dry-run lists them")
    sub.add_argument("--rebuild", action="store_true", help="run it even if done")


def _export(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--to", required=True, metavar="DIR", help="writes DIR/lora, DIR/dataset")
    sub.add_argument("--arm", default="lora", help="which synthetic set (default: lora)")
    sub.add_argument("--push", metavar="ORG/NAME", help="upload both to the hub")
    sub.add_argument("--private", action="store_true", help="make the hub repos private")
    sub.add_argument(
        "--dry-run", action="store_true", help="with --push: list the uploads and stop"
    )


def _pretrain(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--to", required=True, metavar="DIR", help="the base's folder, e.g. models/x")


def _check(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--screenshots", metavar="DIR", help="save PNGs of the report here")


def _run(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--stage",
        choices=STAGE_NAMES,
        default=None,
        help="run up to and including this stage (default: all)",
    )
    sub.add_argument(
        "--dry-run", action="store_true", help="print the plan (done / to run) and stop"
    )
    sub.add_argument(
        "--rebuild",
        action="store_true",
        help="run the --stage's notebooks again although done: their work is found "
        "done, so their figures and tables are redrawn from the finished run",
    )
    sub.add_argument(
        "--executor",
        choices=("local", "slurm"),
        default="local",
        help="local: run here (default); slurm: submit each stage as a job array "
        "of a SLURM cluster, chained with afterok, and follow it",
    )
    sub.add_argument(
        "--print-tasks",
        action="store_true",
        help="print one shell command per task still to do (with --rebuild, the "
        "--stage's too) for a cluster's scheduler, in order, and stop",
    )
    sub.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show papermill's log and the Jupyter kernels' own output",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    quiet.install()  # a run starts here: the expected library messages filtered
    try:
        args.func(args)
    except (
        BrowserError,
        CheckpointError,
        ShareError,
        ConfigError,
        DataError,
        FamilyMismatchError,
        MissingBackboneError,
        SettingsMismatch,
        ShipError,
        SourceError,
        StudyBusy,
        StudyError,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RunStopped as error:
        print(f"stopped: {error}", file=sys.stderr)
        return 130 if error.interrupted else 1
    except KeyboardInterrupt:
        print("stopped: interrupted (Ctrl-C); nothing was running yet", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
