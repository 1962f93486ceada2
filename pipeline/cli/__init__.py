"""Command line: ``python -m pipeline <command> ...``.

Each command lives in its own module of this package, which defines ``add_parser(subparsers)`` (registering the
command, its help and its flags) and ``run(args) -> int``; a command's heavy dependencies are imported inside its
``run``, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: Command modules, in the order ``--help`` lists them.
COMMAND_MODULES = ("rates", "train", "sample", "edit", "geodesic", "batch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import InputError, ModelLoadError, NumericalError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        return int(args.run(args) or 0)
    except (InputError, ModelLoadError, NumericalError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
