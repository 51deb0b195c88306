"""Command line: the same calls the notebooks, scripts and `accelerate launch` use.

    python -m adaswitch_lib prepare  --profile cpu --pair tiny-qwen --task synth_gsm
    python -m adaswitch_lib distill  --profile cpu --pair tiny-qwen --task synth_gsm --method
    adaswitch \\
                                     --divergence forward_kl --K 3 --L 10 --seed 0
    python -m adaswitch_lib baselines --profile cpu --pair tiny-qwen --task synth_gsm   # Teacher /
    Student rows
    accelerate launch --num_processes 2 --cpu -m adaswitch_lib distill --profile smoke ...
    python -m adaswitch_lib distill --help     # every option, its default and its valid values

`--set FIELD=VALUE` (repeatable) overrides a profile field, e.g. `--set kd_steps=50`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from adaswitch_lib import config
from adaswitch_lib.config import RunConfig, get_profile
from adaswitch_lib.errors import KitError

ALIASES = {"adaswitch_k": "--K", "adaswitch_window": "--L"}
CHOICES = {
    "pair": config.PAIRS,
    "task": config.TASKS,
    "method": config.METHODS,
    "divergence": config.DIVERGENCES,
    "skd_rule": config.SKD_RULES,
    "loss_reduction": ("sequence", "token"),
    "teacher_continuation": config.RUN_CONTINUATIONS,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m adaswitch_lib", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("prepare", "train (or find) a pair's teacher and base student for a task"),
        ("baselines", "score the prepared teacher and base student (Table 1's first rows)"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        config.add_profile_options(p)
        p.add_argument(
            "--pair",
            default="tiny-qwen",
            help=f"default: tiny-qwen; one of: {', '.join(config.PAIRS)}",
        )
        p.add_argument(
            "--task",
            default="synth_gsm",
            help=f"default: synth_gsm; one of: {', '.join(config.TASKS)}",
        )
    p = sub.add_parser(
        "distill",
        help="one distillation run -> results/<profile>/runs/<run_id>/",
        description="One distillation run; a run whose finished record exists is skipped.",
    )
    config.add_profile_options(p)
    comments = config.field_help(RunConfig)
    for f in dataclasses.fields(RunConfig):
        if f.name == "profile":
            continue
        flags = [f"--{f.name.replace('_', '-')}"] + ([ALIASES[f.name]] if f.name in ALIASES else [])
        kind = type(f.default)
        valid = f"; one of: {', '.join(CHOICES[f.name])}" if f.name in CHOICES else ""
        text = f"{comments.get(f.name, '')} (default: {f.default}{valid})".strip()
        p.add_argument(
            *flags, dest=f.name, type=kind, default=f.default, help=text.replace("%", "%%")
        )
    return parser


def _restart_with_kernels(profile) -> None:
    """The command again in a new process that runs the profile's `cpu_kernels` (the libraries
    read them once, when they first run): from the command line only, never under a caller."""
    from adaswitch_lib import kernels, models

    unset = kernels.missing(profile.cpu_kernels)
    if unset and models.device_and_dtype(profile.dtype)[0].type == "cpu":
        print(f"==> cpu_kernels={profile.cpu_kernels}: starting again with {unset}", flush=True)
        argv = [sys.executable, "-m", "adaswitch_lib", *sys.argv[1:]]
        os.execve(sys.executable, argv, {**os.environ, **unset})


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        profile = get_profile(args.profile, **config.profile_overrides_from_args(args))
        if argv is None:
            _restart_with_kernels(profile)
        if args.command == "prepare":
            from adaswitch_lib.prepare import prepare_pair

            folder = prepare_pair(profile, args.pair, args.task)
            report = json.loads((folder / "metrics.json").read_text())
            print(
                json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)}, indent=2)
            )
        elif args.command == "baselines":
            from adaswitch_lib.run import record_pair_baselines

            for record in record_pair_baselines(profile, args.pair, args.task):
                print(record["run_id"], json.dumps(record["metrics"]))
        else:
            from adaswitch_lib.run import run_distillation

            fields = {
                f.name: getattr(args, f.name)
                for f in dataclasses.fields(RunConfig)
                if f.name != "profile"
            }
            record = run_distillation(RunConfig(profile=profile, **fields))
            if record:
                print(json.dumps(record["metrics"]))
    except KitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
