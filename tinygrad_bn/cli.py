"""The `tinygrad-bn` command: reproduce the paper's experiments and run the kernel benchmarks.

    tinygrad-bn fig1      Figure 1: sigmoid MLP on MNIST with and without BatchNorm
    tinygrad-bn claims    Section 4.2's claims (Table 2) with a small conv net on MNIST
    tinygrad-bn study     each claim of the abstract, measured on MNIST (four questions)
    tinygrad-bn bench     the kernel benchmarks (arguments go to tinygrad_bn.bench)

Also runs as `python -m tinygrad_bn`. Bad options or inputs exit non-zero with a one-line
message; an interrupted run exits 130 and continues with --resume.
"""

import argparse
import os
import sys

from ._argtypes import nonnegative_int, positive_float, positive_int, probability

PROG = "tinygrad-bn"


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (and exit status 2), not usage + error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_common(p, defaults, name):
    """Options both experiments share: length, data, output, threads, resume, progress."""
    p.add_argument(
        "--steps",
        type=positive_int,
        default=defaults["steps"],
        help="training steps per network (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=defaults["batch_size"],
        help="mini-batch size (default: %(default)s)",
    )
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=defaults["seeds"],
        help="repeat every run with this many seeds and aggregate (mean, std, "
        "min-max) (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=nonnegative_int,
        default=defaults["seed"],
        help="first seed; runs use seed, seed+1, ... (default: %(default)s)",
    )
    p.add_argument(
        "--eval-every",
        type=positive_int,
        default=defaults["eval_every"],
        help="evaluate (and checkpoint) every this many steps (default: %(default)s)",
    )
    p.add_argument(
        "--eval-samples",
        type=positive_int,
        default=defaults["eval_samples"],
        help="evaluate on the first N test images (default: %(default)s)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="directory holding the four MNIST-format IDX files (gzipped or not); "
        "files are verified as tinygrad_bn.data.load_mnist does (default: "
        "$TINYGRAD_BN_DATA, else ~/.cache/tinygrad_bn/mnist)",
    )
    p.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading MNIST files that are missing",
    )
    p.add_argument(
        "--out",
        default=os.path.join("runs", name),
        metavar="DIR",
        help="output directory for results.json, the figure, report.md and "
        "checkpoints/ (default: %(default)s)",
    )
    # 1 by default: measured on 2 cores, a second OpenMP thread gained at most ~10% on these
    # small kernels and made runs 10-20x slower whenever another process was busy
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="threads for the compiled kernels (default: %(default)s; the kernels "
        "here are small, and more threads pay only on an otherwise idle "
        "machine, see docs/results.md)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue interrupted runs from their last checkpoint in --out; "
        "finished runs are not repeated. Gives the same curves as an "
        "uninterrupted run",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars (they are also off when stderr is not a terminal)",
    )
    # Tests simulate an interruption: stop (as Ctrl-C would) after the checkpoint at step N.
    p.add_argument("--stop-after", type=positive_int, default=None, help=argparse.SUPPRESS)


def build_parser():
    from .experiments import claims, fig1, study_cli

    parser = _Parser(
        prog=PROG,
        description=__doc__.split("\n\n")[0] + ".",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run '%(prog)s COMMAND --help' for the options of a command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    f = sub.add_parser(
        "fig1",
        help="the paper's Figure 1 (MNIST, sigmoid MLP, with and without BN)",
        description="Reproduce Figure 1 of Ioffe & Szegedy (2015), Section 4.1: a "
        "784-100-100-100-10 sigmoid MLP on MNIST, trained with plain SGD on "
        "mini-batches, without BN and with BatchNorm1d before each hidden sigmoid. "
        "Writes OUT/results.json, OUT/fig1.png and OUT/report.md.",
    )
    d = fig1.DEFAULTS
    _add_common(f, d, "fig1")
    f.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help=f"learning rate of both networks (default: {d['lr_vanilla']}; see "
        f"docs/results.md for why)",
    )
    f.add_argument(
        "--lr-vanilla",
        type=positive_float,
        default=None,
        help="learning rate of the network without BN (overrides --lr)",
    )
    f.add_argument(
        "--lr-bn",
        type=positive_float,
        default=None,
        help="learning rate of the network with BN (overrides --lr)",
    )
    f.add_argument(
        "--init-std",
        type=positive_float,
        default=d["init_std"],
        help="std of the Gaussian initial weights; biases start at zero (default: %(default)s)",
    )
    f.add_argument(
        "--unit",
        type=nonnegative_int,
        default=d["unit"],
        help="which sigmoid unit (0-99) of the last hidden layer to probe for the "
        "percentile curves (default: %(default)s)",
    )

    c = sub.add_parser(
        "claims",
        help="Section 4.2's claims (Table 2) with a small conv net on MNIST",
        description="Reproduce the claims of Section 4.2 (Table 2) at CPU scale: a small conv "
        "net (conv-BN-act-pool blocks, then a linear classifier) on MNIST in the "
        "variants Baseline, BN-Baseline, BN-x5, BN-x30, BN-x5-Sigmoid, "
        "Baseline-Sigmoid, Baseline-NoDropout and BN-Baseline+Dropout. Reports the "
        "steps each needs to reach the Baseline's best test accuracy and the best "
        "accuracy each reaches. Writes OUT/results.json, OUT/claims.png and "
        "OUT/report.md.",
    )
    d = claims.DEFAULTS
    _add_common(c, d, "claims")
    c.add_argument(
        "--lr",
        type=positive_float,
        default=d["lr"],
        help="base learning rate (SGD with momentum); BN-x5 and BN-x30 use 5x and "
        "30x (default: %(default)s)",
    )
    c.add_argument(
        "--momentum", type=float, default=d["momentum"], help="SGD momentum (default: %(default)s)"
    )
    c.add_argument(
        "--dropout",
        type=probability,
        default=d["dropout"],
        help="dropout probability before the classifier in the variants with "
        "dropout (default: %(default)s)",
    )
    c.add_argument(
        "--channels",
        type=positive_int,
        nargs="+",
        default=d["channels"],
        metavar="C",
        help="output channels of each conv block; each block halves "
        "the image with a 2x2 max pool, so at most 4 blocks (default: "
        "%(default)s)",
    )
    c.add_argument(
        "--variants",
        nargs="+",
        choices=list(claims.VARIANTS),
        default=list(claims.VARIANTS),
        metavar="NAME",
        help="which variants to run (default: all: %(default)s)",
    )

    study_cli.add_parser(sub)  # tinygrad-bn study (experiments/study_cli.py)

    # listed for --help only: main() hands 'bench ...' to tinygrad_bn.bench.main unparsed
    sub.add_parser(
        "bench",
        help="the kernel benchmarks: every argument after 'bench' goes "
        "to tinygrad_bn.bench (try 'bench --help')",
    )
    return parser


def _fig1_config(args):
    lr = args.lr
    return {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seeds": args.seeds,
        "seed": args.seed,
        "eval_every": args.eval_every,
        "eval_samples": args.eval_samples,
        "init_std": args.init_std,
        "unit": args.unit,
        **({"lr_vanilla": lr, "lr_bn": lr} if lr is not None else {}),
        **({"lr_vanilla": args.lr_vanilla} if args.lr_vanilla is not None else {}),
        **({"lr_bn": args.lr_bn} if args.lr_bn is not None else {}),
    }


def _claims_config(args):
    return {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seeds": args.seeds,
        "seed": args.seed,
        "eval_every": args.eval_every,
        "eval_samples": args.eval_samples,
        "lr": args.lr,
        "momentum": args.momentum,
        "dropout": args.dropout,
        "channels": list(args.channels),
        "variants": list(dict.fromkeys(args.variants)),
    }


def _data_dir(args):
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise FileNotFoundError(
            f"data directory {args.data_dir} does not exist (pass "
            f"--data-dir DIR with the four MNIST IDX files)"
        )
    return args.data_dir


def _run_experiment(args):
    from .experiments import claims, fig1, study_cli

    if args.command == "study":
        return study_cli.main(args, PROG)

    module, config = (
        (fig1, _fig1_config(args)) if args.command == "fig1" else (claims, _claims_config(args))
    )
    progress = not args.no_progress and sys.stderr.isatty()
    results = module.run(
        config,
        args.out,
        data_dir=_data_dir(args),
        download=not args.no_download,
        resume=args.resume,
        progress=progress,
        threads=args.threads,
        stop_after=args.stop_after,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    with open(os.path.join(args.out, "report.md"), encoding="utf-8") as f:
        print(f.read())
    print(
        f"Wrote {os.path.join(args.out, 'results.json')}, "
        f"{os.path.join(args.out, results['experiment'] + '.png')} and "
        f"{os.path.join(args.out, 'report.md')} "
        f"(total {results['total_wall_s']:.1f} s)."
    )
    return 0


def _run_bench(argv):
    try:
        from . import bench
    except ImportError as e:
        print(
            f"{PROG} bench: error: the kernel benchmarks are not available ({e})", file=sys.stderr
        )
        return 1
    return bench.main(argv) or 0


def main(argv=None):
    """Entry point of the `tinygrad-bn` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        # everything after 'bench' belongs to the benchmark's own parser, '--help' included
        return _run_bench(argv[1:])
    args = build_parser().parse_args(argv)
    from .experiments.runner import StopRequested

    try:
        return _run_experiment(args)
    except StopRequested as e:
        print(f"{PROG}: {e}; continue with --resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(
            f"\n{PROG}: interrupted; rerun the same command with --resume to continue "
            f"from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    except (ValueError, OSError, RuntimeError, ImportError) as e:
        # one line: the first line of the message (load_mnist explains more on later lines)
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return 1
