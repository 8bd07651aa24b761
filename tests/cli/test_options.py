"""The CLI package: argument types, choices taken from the tables they name, one parser per command."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

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
    bench = _help("bench")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in PRESETS:  # every preset of the table, in bench's help and the README
        assert f" {name}," in bench or f" {name})" in bench, name
        assert f"`{name}`" in readme, name


def test_every_command_has_a_module() -> None:
    names = [m.__name__.rsplit(".", 1)[1] for m in COMMANDS]
    assert names == ["export", "validate", "inspect", "sample", "calibrate", "bench", "build", "demo", "triton_repo",
                     "serve"]
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == [n.replace("_", "-") for n in names]


def test_python_m_runs_the_package() -> None:
    r = subprocess.run([sys.executable, "-m", "l2p.cli", "bench", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--calibrate" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-m", "l2p.cli", "sample", "nowhere", "--conditioning", "c.npz",
                        "--out", "o", "--steps", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: --steps 0") and r.stderr.count("\n") == 1


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_of_every_command_has_help() -> None:
    parsers = {"l2p": build_parser(), **_subparsers()}
    missing = [f"{name} {a.option_strings[0] if a.option_strings else a.dest}"
               for name, p in parsers.items() for a in p._actions
               if not isinstance(a, argparse._SubParsersAction) and not (a.help or "").strip()]
    assert not missing, f"options without a help line: {missing}"


def test_help_shows_defaults() -> None:
    """Every option with a value default shows it; switches and unset options do not say 'None'/'False'."""
    for name, p in _subparsers().items():
        text = " ".join(p.format_help().split())
        assert "(default: None)" not in text and "(default: False)" not in text, name
        for a in p._actions:
            if a.option_strings and a.default not in (None, False, argparse.SUPPRESS):
                shown = p._get_formatter()._expand_help(a)  # the help line as --help prints it
                assert "default" in shown, (name, a.dest, shown)
    assert "--steps N sampling steps (1..1000) (default: 50)" in _help("sample")
    assert "(default: 3 4 5)" in _help("calibrate")  # a list default as it is typed


def test_calibrate_steps_default_like_sample() -> None:
    parsers = _subparsers()
    ns = parsers["calibrate"].parse_args(["b", "--conditioning", "c.npz", "--full-steps", "10"])
    assert ns.steps == parsers["sample"].parse_args(["b", "--conditioning", "c", "--out", "o"]).steps == 50


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: l2p") and all(m.__name__.rsplit(".", 1)[1].replace("_", "-") in out for m in COMMANDS)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import metadata

    import numpy
    import onnxruntime

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"l2p {metadata.version('l2p')} ")
    assert f"onnxruntime {onnxruntime.__version__}" in out and f"numpy {numpy.__version__}" in out
