"""The `tinygrad-bn` command: reproduce the paper's experiments and run the kernel benchmarks.

    tinygrad-bn fig1      Figure 1: sigmoid MLP on MNIST with and without BatchNorm
    tinygrad-bn claims    Section 4.2's claims (Table 2) with a small conv net on MNIST
    tinygrad-bn study     each claim of the abstract, measured on MNIST (four questions)
    tinygrad-bn bench     the kernel benchmarks (arguments go to tinygrad_bn.bench)

Also runs as `python -m tinygrad_bn`. A bad option or value exits 2 with a one-line message
naming the command's --help; an error of the run itself (a damaged data file, say) exits 1
with the whole message and no traceback; an interrupted run exits 130 and continues with
--resume.
"""

import argparse
import os
import sys

from . import __version__
from ._argtypes import (
    MAX_SEED,
    MAX_SEEDS,
    MAX_STEPS,
    existing_dir,
    fraction,
    int_in_range,
    output_dir,
    positive_float,
    positive_int,
    thread_count,
)

PROG = "tinygrad-bn"

# Bounds of the size options, said in --help: beyond them a run would only exhaust memory
# (claims' conv net holds batch x channels x 28 x 28 activations per block) or never end.
MAX_EVAL_SAMPLES = 10_000  # MNIST's test set
MAX_CHANNELS = 64
MAX_BLOCKS = 4  # each block halves the 28x28 image with a 2x2 max pool


class _Parser(argparse.ArgumentParser):
    """argparse with our habits: no abbreviations (`--step` is not `--steps`), an error is one
    line on stderr with exit status 2, and an unknown option is reported by the (sub)command
    it was given to, pointing at that command's --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        # argparse hands a subcommand's leftovers up to the top parser, which would blame
        # itself; refusing them here names the subcommand (`tinygrad-bn fig1 --help`)
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _BlockChannels(argparse.Action):
    """--channels C [C ...]: one to MAX_BLOCKS counts (each count is checked by its type)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) > MAX_BLOCKS:
            parser.error(
                f"argument {option_string}: expected 1 to {MAX_BLOCKS} blocks (each halves "
                f"the 28x28 image) (got {len(values)})"
            )
        setattr(namespace, self.dest, values)


def _add_common(p, defaults, name, max_batch):
    """Options both experiments share: length, data, output, threads, resume, progress."""
    p.add_argument(
        "--steps",
        type=int_in_range(1, MAX_STEPS),
        default=defaults["steps"],
        help=f"training steps per network (1 to {MAX_STEPS:,}; default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=int_in_range(2, max_batch),
        default=defaults["batch_size"],
        help=f"mini-batch size (2 to {max_batch:,}: BatchNorm needs 2 values per feature; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--seeds",
        type=int_in_range(1, MAX_SEEDS),
        default=defaults["seeds"],
        help=f"repeat every run with this many seeds and aggregate (mean, std, "
        f"min-max) (1 to {MAX_SEEDS}; default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int_in_range(0, MAX_SEED),
        default=defaults["seed"],
        help=f"first seed; runs use seed, seed+1, ... (0 to {MAX_SEED:,}; default: %(default)s)",
    )
    p.add_argument(
        "--eval-every",
        type=int_in_range(1, MAX_STEPS),
        default=defaults["eval_every"],
        help="evaluate (and checkpoint) every this many steps "
        f"(1 to {MAX_STEPS:,}; default: %(default)s)",
    )
    p.add_argument(
        "--eval-samples",
        type=int_in_range(1, MAX_EVAL_SAMPLES),
        default=defaults["eval_samples"],
        help=f"evaluate on the first N test images (1 to {MAX_EVAL_SAMPLES:,}; "
        "default: %(default)s)",
    )
    p.add_argument(
        "--data-dir",
        type=existing_dir,
        default=None,
        metavar="DIR",
        help="directory holding the four MNIST-format IDX files (gzipped or not); "
        "files are verified as tinygrad_bn.data.load_mnist does (default: "
        "$TINYGRAD_BN_DATA, else the MNIST copy bundled with tinygrad_bn)",
    )
    p.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading MNIST files missing from --data-dir or $TINYGRAD_BN_DATA",
    )
    p.add_argument(
        "--out",
        type=output_dir,
        default=os.path.join("runs", name),
        metavar="DIR",
        help="output directory for results.json, the figure, report.md and "
        "checkpoints/ (default: %(default)s)",
    )
    # 1 by default: measured on 2 cores, a second OpenMP thread gained at most ~10% on these
    # small kernels and made runs 10-20x slower whenever another process was busy
    p.add_argument(
        "--threads",
        type=thread_count,
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
    p.add_argument(
        "--eager",
        action="store_true",
        help="run the training step eagerly instead of replaying it with tg.jit "
        "(same results, slower)",
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
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
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
    _add_common(f, d, "fig1", max_batch=60_000)  # MNIST's training set
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
        type=int_in_range(0, 99),
        default=d["unit"],
        help="which sigmoid unit (0 to 99) of the last hidden layer to probe for the "
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
    # at the bounds (1,000 images, 4 blocks of 64 channels) a run peaked at 2.4 GB (measured)
    _add_common(c, d, "claims", max_batch=1_000)
    c.add_argument(
        "--lr",
        type=positive_float,
        default=d["lr"],
        help="base learning rate (SGD with momentum); BN-x5 and BN-x30 use 5x and "
        "30x (default: %(default)s)",
    )
    c.add_argument(
        "--momentum",
        type=fraction,
        default=d["momentum"],
        help="SGD momentum, in [0, 1) (default: %(default)s)",
    )
    c.add_argument(
        "--dropout",
        type=fraction,
        default=d["dropout"],
        help="dropout probability, in [0, 1), before the classifier in the variants with "
        "dropout (default: %(default)s)",
    )
    c.add_argument(
        "--channels",
        type=int_in_range(1, MAX_CHANNELS),
        nargs="+",
        action=_BlockChannels,
        default=d["channels"],
        metavar="C",
        help=f"output channels of each conv block (1 to {MAX_CHANNELS} each); each block "
        f"halves the image with a 2x2 max pool, so at most {MAX_BLOCKS} blocks (default: "
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
        data_dir=args.data_dir,
        download=not args.no_download,
        resume=args.resume,
        progress=progress,
        threads=args.threads,
        stop_after=args.stop_after,
        eager=args.eager,
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


def _missing_dirs(path):
    """The folders that creating ``path`` (and ``path``/checkpoints) would add, deepest first."""
    missing, path = [], os.path.abspath(os.path.join(path, "checkpoints"))
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def _remove_empty(dirs):
    """Remove the folders a failed run created, if it left them empty (deepest first)."""
    for d in dirs:
        try:
            os.rmdir(d)  # only ever removes an empty folder
        except OSError:
            return


def _message(e):
    """The whole message of an error: load_mnist and the checkpoint reader explain on more
    lines (the damaged file and both checksums; each mirror's reason and the files expected)."""
    if isinstance(e, MemoryError):
        return "out of memory; try a smaller --batch-size, --eval-samples or --channels"
    return str(e).strip() or type(e).__name__


def main(argv=None):
    """Entry point of the `tinygrad-bn` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        # everything after 'bench' belongs to the benchmark's own parser, '--help' included
        return _run_bench(argv[1:])
    args = build_parser().parse_args(argv)
    from .experiments.runner import StopRequested

    created = _missing_dirs(args.out)
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
    except (ValueError, OSError, RuntimeError, ImportError, MemoryError) as e:
        print(f"{PROG} {args.command}: error: {_message(e)}", file=sys.stderr)
        return 1
    finally:
        # a run that fails before training (no data, say) leaves no empty folders behind
        _remove_empty(created)
