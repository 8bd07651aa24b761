"""The install story: CI runs exactly the README's test command, and the export extra does not pin torch."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    """The one-line bash blocks of the README, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks if "\n" not in b.strip()]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    tests = [c for c in _readme_commands() if "pytest" in c]
    assert len(tests) == 1
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip() and
          not ln.startswith(("#", "set ", "cd "))]
    assert ci == tests


def test_torch_is_a_range_in_the_extra_and_pinned_on_the_install_lines() -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["export"]
    torch = [r for r in extra if re.match(r"torch\b", r)]
    assert torch and not any("==" in r for r in torch), torch  # no exact pin forced on every user
    installs = [c for c in _readme_commands() if c.startswith("pip install") and "[export" in c]
    assert len(installs) == 2 and all(c.startswith("pip install torch==2.13.0 ") for c in installs)  # the CPU wheel
