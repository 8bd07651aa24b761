"""The CLI package: argument types, choices taken from the tables they name, one parser per command."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from l2p.cli import COMMANDS, build_parser, main
from l2p.cli.options import non_negative, positive
from l2p.precision import Precision
from l2p.predictor.presets import PRESETS


@pytest.mark.parametrize("text", ["-3", "0", "x", "2.5"])
def test_positive_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        positive(text)


def test_counts() -> None:
    assert positive("1") == 1 and positive("12") == 12
    assert non_negative("0") == 0
    with pytest.raises(argparse.ArgumentTypeError, match="-1 is not"):
        non_negative("-1")


@pytest.mark.parametrize("argv", [
    ["export", "m", "--out", "o", "--height", "-3", "--width", "64"],
    ["export", "m", "--out", "o", "--latent-size", "8", "0"],
    ["bench", "b", "--seeds", "-3"],
    ["calibrate", "b", "--steps", "10", "--full-steps", "3", "--K", "0"],
    ["calibrate", "b", "--steps", "10", "--full-steps", "3", "--warmup", "-1"],
])
def test_negative_counts_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "is not" in capsys.readouterr().err


def _help(command: str) -> str:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return " ".join(sub.choices[command].format_help().split())  # unwrapped


def test_help_lists_every_method_and_precision() -> None:
    text = _help("sample")
    for name in ("full", *PRESETS, "l2p:NAME"):
        assert f" {name}," in text or f" {name} " in text, name
    for command in ("export", "build"):
        assert "{" + ",".join(p.value for p in Precision) + "}" in _help(command)


def test_every_command_has_a_module() -> None:
    names = [m.__name__.rsplit(".", 1)[1] for m in COMMANDS]
    assert names == ["export", "validate", "sample", "calibrate", "bench", "build", "demo", "triton_repo", "serve"]
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [n.replace("_", "-") for n in names]


def test_python_m_runs_the_package() -> None:
    r = subprocess.run([sys.executable, "-m", "l2p.cli", "bench", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--calibrate" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "l2p.cli", "sample", "nowhere", "--conditioning", "c.npz",
                        "--out", "o", "--steps", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: --steps 0") and r.stderr.count("\n") == 1
