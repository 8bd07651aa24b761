"""``l2p``: one subcommand per stage. A thin front end over the package.

Every :class:`~l2p.errors.L2PError`, a usage error, and a failure of the environment, a native
library or a damaged input file (:mod:`l2p.failures`) becomes one ``error: ...`` line and exit
status 2; ``--debug`` shows the traceback instead. Anything else is a bug and keeps its traceback.
``l2p`` without a command prints the help, as ``l2p --help`` does (exit status 0); ``l2p --version``
prints the versions a run depends on.

Each subcommand is a module here with ``add_parser(sub)`` (its flags) and ``run(args)`` (exit
status); the option groups they share, and the settings objects those build, are in
:mod:`l2p.cli.options`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..errors import L2PError
from ..versions import versions
from . import bench, build, calibrate, demo, export, inspect, sample, serve, triton_repo, validate
from .options import Parser

#: the subcommands, in the order ``l2p --help`` lists them
COMMANDS = (export, validate, inspect, sample, calibrate, bench, build, demo, triton_repo, serve)


class _Parser(Parser):
    """Usage errors as one line, like every other error (subcommand parsers inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {_one_line(message)} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="l2p", epilog="l2p COMMAND --help describes a command's options.",
               description="Export diffusion transformers to ONNX/TensorRT, learn a linear feature predictor "
                           "(L2P) that stands in for most transformer steps, and sample without PyTorch.")
    p.add_argument("--version", action=_Version,
                   help="print the versions of l2p, ONNX Runtime, numpy and Python, and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def version_line() -> str:
    """``l2p 0.1.0 (onnxruntime 1.22.0, numpy 2.2.6, python 3.12.3)``."""
    v = versions()
    return f"l2p {v.pop('l2p')} ({', '.join(f'{k} {x}' for k, x in v.items())})"


class _Version(argparse.Action):
    """``--version``: prints :func:`version_line` (the runtimes are imported only when asked)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_line())
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv:  # no command: the help, as for --help (not a usage error)
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except L2PError as e:
        if args.debug:
            raise
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except Exception as e:  # the environment, native libraries, damaged files: one line (see l2p.failures)
        return _report(e, args)
    except BaseException as e:  # pyo3's PanicException derives from BaseException
        if isinstance(e, (SystemExit, GeneratorExit)):
            raise
        return _report(e, args)


def _report(e: BaseException, args: argparse.Namespace) -> int:
    from ..failures import describe

    msg = describe(e, args.command)
    if msg is None or args.debug:  # None: a bug in l2p, keep its traceback
        raise e
    print(f"error: {_one_line(msg)} (--debug shows the traceback)", file=sys.stderr)
    return 2


def _one_line(text: str) -> str:
    return "; ".join(ln.strip() for ln in text.strip().splitlines() if ln.strip())
