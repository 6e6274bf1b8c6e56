"""The ``stnas`` command.

    stnas search [--method stnas|darts|drnas] [--space NAME|FILE] [--data DIR] [--out DIR] [--resume] ...
    stnas space info [--space ...]
    stnas evaluate --checkpoint OUT/supernet.ckpt --archs ARCHS.json [--data DIR] [--csv FILE]
    stnas export --checkpoint OUT/supernet.ckpt --arch ARCH.json [--data DIR] --out MODEL.pt
    stnas retrain ARCH.json [--space ...] [--data DIR] [--epochs N] [--out DIR] [--resume]
    stnas rank SCORES.csv|--scores SCORES.csv --benchmark NB201.csv [--metric cifar10] [--out DIR]

With no ``--data`` every command uses the built-in demo dataset (written once to the cache folder) and
a demo-size space; a demo search takes a few minutes on two CPU cores. ``stnas search --method NAME
--help`` lists that method's own options.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from stnas.cli.commands import HANDLERS, add_data_args

log = logging.getLogger("stnas")


def _method_of(argv: list[str]) -> str:
    """The --method value in ``argv`` (the default when absent), read before the full parse so the
    method's own options can be added to the parser."""
    from stnas.methods import DEFAULT_METHOD

    for i, a in enumerate(argv):
        if a == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--method="):
            return a.split("=", 1)[1]
    return DEFAULT_METHOD


class _Parser(argparse.ArgumentParser):
    """argparse takes "-5M" or "-1e3" for an option (its negative numbers are plain digits), so a
    negative budget was "expected one argument"; here they are values, which the option's type refuses
    in one line. Subcommand parsers are of the same class."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?[kKmMgG]?$")


def build_parser(method: str | None = None) -> argparse.ArgumentParser:
    from stnas.methods import DEFAULT_METHOD, get_method, method_names

    parser = _Parser(prog="stnas", description="One-shot NAS at hardware speed: ST-NAS, DARTS, "
                                     "DrNAS and their family behind one command.")
    from stnas import __version__

    parser.add_argument("--version", action="version", version=f"stnas {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    names = method_names()
    s = sub.add_parser("search", help="search a space with a method (default: ST-NAS)",
                       description="Search a space. Methods: " + "; ".join(
                           f"{n}: {get_method(n).summary}" for n in names),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--method", choices=names, default=DEFAULT_METHOD,
                   help=f"search method (default: {DEFAULT_METHOD}); `--method NAME --help` shows its options")
    s.add_argument("--space", default=None,
                   help="built-in space name or a YAML/JSON space file (default: the method's demo space without "
                        "--data, its full space with it)")
    add_data_args(s)
    s.add_argument("--seed", type=int, default=0, help="random seed of the whole run (default: 0)")
    s.add_argument("--out", type=Path, default=Path("stnas-search"), help="output folder (default: ./stnas-search)")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    chosen = method if method in names else DEFAULT_METHOD
    get_method(chosen).add_arguments(s.add_argument_group(f"options of --method {chosen}"))

    sp = sub.add_parser("space", help="search spaces")
    spsub = sp.add_subparsers(dest="space_command", required=True)
    info = spsub.add_parser("info", help="print a space's size and MAdds range as JSON")
    info.add_argument("--space", default="tas", help="built-in name or file (default: tas)")
    spsub.add_parser("list", help="the built-in spaces: kind, size, MAdds and parameter ranges")

    ev = sub.add_parser("evaluate", help="score architectures with a trained ST-NAS supernet (CSV)")
    ev.add_argument("--checkpoint", type=Path, required=True, help="supernet.ckpt of a search")
    ev.add_argument("--archs", type=Path, required=True,
                    help="JSON file: an architecture, a list of them, or an exported best_*.json")
    add_data_args(ev)
    ev.add_argument("--csv", type=Path, default=None, help="output CSV (default: next to --archs)")

    ex = sub.add_parser("export", help="a standalone model of one architecture with the supernet's weights")
    ex.add_argument("--checkpoint", type=Path, required=True, help="supernet.ckpt of a search")
    ex.add_argument("--arch", type=Path, required=True, help="architecture JSON (e.g. best_*.json)")
    add_data_args(ex)
    ex.add_argument("--out", type=Path, required=True, help="model file to write (.pt, safe to load)")

    rt = sub.add_parser("retrain", help="train an architecture's standalone model from scratch")
    rt.add_argument("arch", type=Path, help="architecture JSON (best_*.json of ST-NAS, derived.json of DrNAS/DARTS)")
    rt.add_argument("--space", default=None, help="space of the architecture (default: the one named in the file)")
    add_data_args(rt)
    rt.add_argument("--epochs", type=int, default=None,
                    help="epochs (default: 200 for a cell space on real data, as NAS-Bench-201; 15 on the demo data)")
    rt.add_argument("--lr", type=float, default=None, help="peak learning rate, cosine to 0 (default: 0.1)")
    rt.add_argument("--weight-decay", type=float, default=None, help="weight decay (default: by space)")
    rt.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    rt.add_argument("--out", type=Path, default=Path("stnas-retrain"), help="output folder (default: ./stnas-retrain)")
    rt.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")

    rk = sub.add_parser("rank", help="rank correlation of a scores CSV against NAS-Bench-201's table (with a plot)")
    rk.add_argument("scores", type=Path, nargs="?", default=None,
                    help="CSV with an architecture column (NB201 string or JSON) and a score (or --scores)")
    rk.add_argument("--scores", dest="scores_file", type=Path, default=None,
                    help="the scores CSV, as an option (e.g. OUT/scores.csv of any stnas search)")
    rk.add_argument("--benchmark", type=Path, required=True, help="the NAS-Bench-201 table (nats_bench.csv)")
    rk.add_argument("--metric", default="cifar10", help="cifar10 (default), cifar100 or imagenet16-120")
    rk.add_argument("--score-column", default=None, help="the column of scores (default: score, else mean)")
    rk.add_argument("--out", type=Path, default=None, help="folder for rank.json and rank.png (default: next to the CSV)")
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    method = _method_of(argv) if argv[:1] == ["search"] else None
    args = build_parser(method).parse_args(argv)
    from stnas.benchmarks import BenchmarkError
    from stnas.data import DataError
    from stnas.io import CheckpointError, OutputError
    from stnas.spaces import SpaceError

    try:
        return HANDLERS[args.command](args)
    except KeyboardInterrupt as e:
        print("\nstnas: interrupted; the checkpoint is saved, continue with the same command and --resume",
              file=sys.stderr)
        signum = str(e).removeprefix("signal ")
        return 128 + int(signum) if signum.isdigit() else 130  # SIGTERM: 143, Ctrl-C: 130, as shells count
    except (SpaceError, CheckpointError, DataError, BenchmarkError, OutputError, FileExistsError,
            FloatingPointError, ValueError) as e:
        print(f"stnas {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
