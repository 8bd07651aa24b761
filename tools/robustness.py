"""Run the robustness tests (tests/robustness) with pytest and print one row per test.

    python tools/robustness.py                 # every test, slow ones included, on a tiny FLUX bundle
    python tools/robustness.py --soak 200      # the memory soak with 200 samples (RSS after 10, 50, 100, 200)
    python tools/robustness.py --only predictor --work /tmp/l2p-rb   # some tests; keep the files

Each row is one pytest test: its outcome (``refused``: l2p answered with a clear error; ``ok``:
it coped; ``FAIL``; ``skipped``), its time and l2p's one-line answer, read from pytest's JUnit XML
report (the tests record the answer with the ``answer`` fixture). Exit status 1 when a test failed.
Needs the export extra (torch) to build the bundle.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rows(report: Path) -> list[tuple[str, str, str, str]]:
    """(test, outcome, time, message) per ``<testcase>`` of a pytest JUnit XML report."""
    out = []
    for case in ET.parse(report).iter("testcase"):
        props = {p.get("name"): p.get("value", "") for p in case.iter("property")}
        problem = next((case.find(k) for k in ("failure", "error") if case.find(k) is not None), None)
        skipped = case.find("skipped")
        if problem is not None:
            outcome, msg = "FAIL", problem.get("message", "")
        elif skipped is not None:
            outcome, msg = "skipped", skipped.get("message", "")
        else:
            outcome, msg = props.get("outcome", "passed"), props.get("message", "")
        name = f"{case.get('classname', '').rpartition('.')[2]}::{case.get('name')}"
        out.append((name, outcome, f"{float(case.get('time', 0)):.1f}s", " ".join(msg.split())))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--soak", type=int, default=0, help="samples in the memory soak (default: the test's 60)")
    p.add_argument("--only", default="", help="run only tests whose name matches this pytest -k expression")
    p.add_argument("--work", help="pytest's --basetemp: the tiny model, bundle and test folders stay there")
    a = p.parse_args()
    if a.soak < 0:
        p.error(f"--soak {a.soak}: give a number of samples >= 1")

    env = {**os.environ, "L2P_ROBUSTNESS_THOROUGH": "1", "L2P_THREADS": os.environ.get("L2P_THREADS", "2")}
    if a.soak:
        env["L2P_SOAK"] = str(a.soak)
    with tempfile.TemporaryDirectory(prefix="l2p-robustness-") as tmp:
        report = Path(tmp) / "report.xml"
        cmd = [sys.executable, "-m", "pytest", "tests/robustness", "-q", "-p", "no:cacheprovider",
               "-m", "not gpu and not tensorrt", "-o", "junit_family=xunit1", f"--junitxml={report}"]
        cmd += ["-k", a.only] if a.only else []
        cmd += [f"--basetemp={a.work}"] if a.work else []
        status = subprocess.run(cmd, cwd=REPO, env=env).returncode
        if not report.is_file():
            print(f"pytest wrote no report (exit status {status})", file=sys.stderr)
            return 1
        table = rows(report)
    width = max((len(r[0]) for r in table), default=4)
    print(f"\n{'test':{width}s}  {'outcome':8s} {'time':>6s}  message")
    for name, outcome, secs, msg in table:
        print(f"{name:{width}s}  {outcome:8s} {secs:>6s}  {msg}")
    failed = sum(r[1] == "FAIL" for r in table)
    print(f"\n{len(table)} cases, {failed} failed")
    return 1 if failed or status not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())
