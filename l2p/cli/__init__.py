"""``l2p``: one subcommand per stage. A thin front end over the package.

Every :class:`~l2p.errors.L2PError` becomes a one-line ``error: ...`` and exit status 2;
``--debug`` shows the traceback instead.

Each subcommand is a module here with ``add_parser(sub)`` (its flags) and ``run(args)`` (exit
status); the option groups they share, and the settings objects those build, are in
:mod:`l2p.cli.options`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import L2PError
from . import bench, build, calibrate, demo, export, sample, serve, triton_repo, validate

#: the subcommands, in the order ``l2p --help`` lists them
COMMANDS = (export, validate, sample, calibrate, bench, build, demo, triton_repo, serve)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="l2p", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except L2PError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
