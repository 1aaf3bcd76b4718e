"""The `tinygrad-bn study` subcommand: its options (add_parser) and its run (main)."""

import argparse
import os
import sys

from .._argtypes import MAX_SEED, MAX_SEEDS, MAX_STEPS, int_at_least, int_in_range, positive_int

MAX_JOBS = 64


def _questions(text):
    """'1,4' -> [1, 4]; each a question number 1-4."""
    try:
        qs = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        qs = []
    if not qs or any(q not in (1, 2, 3, 4) for q in qs):
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of question numbers 1-4 (got {text!r})"
        )
    return sorted(set(qs))


def _bounded(minimum, maximum):
    at_least = int_at_least(minimum)

    def parse(text):
        value = at_least(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {minimum} to {maximum} (got {value})"
            )
        return value

    return parse


def add_parser(sub):
    """Add `study` to the subparsers `sub` of the tinygrad-bn command."""
    from . import study

    d = study.DEFAULTS
    p = sub.add_parser(
        "study",
        help="each claim of the abstract, measured on MNIST: four questions, one command",
        description="Measure each claim of the paper's abstract on MNIST: (1) learning rate x "
        "initial weight scale, (2) depth with saturating nonlinearities, (3) regularization, "
        "(4) mini-batch dependence, with Batch Renormalization, LayerNorm, GroupNorm and "
        "Algorithm 2's population statistics. Every grid cell is cached in OUT/cells/ as soon "
        "as it finishes: rerun the same command to resume, or a larger grid to reuse the cells "
        "there are. Writes OUT/study.json, OUT/q<N>.png and OUT/report.md.",
        allow_abbrev=False,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny grids, one seed: under a minute (a smoke test, not a result)",
    )
    p.add_argument(
        "--questions",
        type=_questions,
        default=None,
        metavar="LIST",
        help="comma-separated questions to run, each 1-4 (default: 1,2,3,4)",
    )
    p.add_argument(
        "--seeds",
        type=_bounded(1, MAX_SEEDS),
        default=None,
        help=f"seeds per grid point, 1-{MAX_SEEDS} (default: {d['seeds']}; --quick: 1)",
    )
    p.add_argument(
        "--seed",
        type=int_in_range(0, MAX_SEED),
        default=None,
        help=f"first seed, 0 to {MAX_SEED:,}; cells use seed, seed+1, ... (default: 0)",
    )
    p.add_argument(
        "--steps",
        type=int_in_range(1, MAX_STEPS),
        default=None,
        help=f"training steps per cell, 1 to {MAX_STEPS:,}, for every question; question 4 "
        "sees steps x 60 examples at every batch size (default: per question, "
        + ", ".join(f"q{q} {d[f'q{q}']['steps']}" for q in study.QUESTIONS)
        + ")",
    )
    p.add_argument(
        "--jobs",
        type=_bounded(1, MAX_JOBS),
        default=1,
        help=f"worker processes, 1-{MAX_JOBS}, one kernel thread each; results do not depend "
        "on it (default: %(default)s)",
    )
    p.add_argument(
        "--out",
        default=os.path.join("runs", "study"),
        metavar="DIR",
        help="output directory: study.json, q<N>.png, report.md, cells/ (default: %(default)s)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="directory holding the four MNIST IDX files (default: $TINYGRAD_BN_DATA, else "
        "~/.cache/tinygrad_bn/mnist)",
    )
    p.add_argument(
        "--no-download", action="store_true", help="fail instead of downloading missing MNIST files"
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (it is also off when stderr is not a terminal)",
    )
    # tests simulate an interruption: stop (as Ctrl-C would) once N new cells are cached
    p.add_argument("--stop-after-cells", type=positive_int, default=None, help=argparse.SUPPRESS)
    return p


def main(args, prog):
    """Run the study the parsed `args` ask for; print the report. Returns the exit status."""
    from . import study
    from .runner import StopRequested

    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise FileNotFoundError(f"data directory {args.data_dir} does not exist")
    config = study.make_config(
        quick=args.quick,
        questions=args.questions,
        seeds=args.seeds,
        seed=args.seed,
        steps=args.steps,
    )
    try:
        result = study.run(
            config,
            args.out,
            data_dir=args.data_dir,
            download=not args.no_download,
            jobs=args.jobs,
            progress=not args.no_progress and sys.stderr.isatty(),
            stop_after_cells=args.stop_after_cells,
            log=lambda msg: print(msg, file=sys.stderr),
        )
    except (KeyboardInterrupt, StopRequested) as e:
        reason = str(e) or "interrupted"
        print(
            f"\n{prog} study: {reason}; finished cells are cached in {args.out}/cells: rerun "
            "the same command to continue",
            file=sys.stderr,
        )
        return 130
    with open(os.path.join(args.out, "report.md"), encoding="utf-8") as f:
        print(f.read())
    print(
        f"Wrote {os.path.join(args.out, 'study.json')}, the figures and "
        f"{os.path.join(args.out, 'report.md')} (total {result['total_wall_s']:.1f} s)."
    )
    return 0
