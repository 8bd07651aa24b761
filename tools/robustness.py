"""Run the robustness battery (tests/robustness) and print one row per case.

    python tools/robustness.py                 # every case, on a tiny FLUX bundle built in a temp dir
    python tools/robustness.py --soak 200      # also: RSS after 10, 50, 100, 200 samples in one process
    python tools/robustness.py --only predictor --work /tmp/l2p-rb   # some cases; keep the bundle

Exit status 1 when a case failed. Needs the export extra (torch) to build the bundle.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("L2P_THREADS", "2")


def build(work: Path) -> tuple[Path, Path]:
    """The tiny FLUX folder and its bundle under ``work`` (reused when already there)."""
    from l2p.bundle import open_bundle
    from l2p.errors import ArtifactError
    from l2p.export.exporter import export_bundle
    from tests.conftest import make_flux_folder

    folder, bundle = work / "flux", work / "bundle"
    if not (folder / "transformer" / "config.json").is_file():
        make_flux_folder(folder, guidance=True)
    try:
        open_bundle(bundle)
    except ArtifactError:
        print(f"exporting a tiny FLUX bundle to {bundle} ...", flush=True)
        export_bundle(str(folder), bundle, latent_size=(8, 8), log=lambda s: None)
    return folder, bundle


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--soak", type=int, default=0, help="also run N samples in one process and print RSS")
    p.add_argument("--only", default="", help="run only cases whose name contains this text")
    p.add_argument("--work", help="folder for the tiny model and bundle (kept; default: a temp dir)")
    a = p.parse_args()

    import numpy as np

    from tests.robustness.cases_runs import soak
    from tests.robustness.catalog import Ctx, Skip, all_cases

    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="l2p-robustness-"))
    work.mkdir(parents=True, exist_ok=True)
    folder, bundle = build(work)
    rng = np.random.default_rng(0)
    cond = {"encoder_hidden_states": rng.standard_normal((2, 8, 32)).astype(np.float32),
            "pooled_projections": rng.standard_normal((2, 24)).astype(np.float32)}
    rows, failed = [], 0
    for c in all_cases():
        if a.only not in c.name:
            continue
        tmp = Path(tempfile.mkdtemp(prefix="case-", dir=work))
        ctx = Ctx(bundle=bundle, folder=folder, cond=cond, tmp=tmp, soak=40, quick=False)
        t0 = time.perf_counter()
        try:
            outcome, msg = c.outcome, c.run(ctx)
        except Skip as e:
            outcome, msg = "skipped", str(e)
        except AssertionError as e:
            outcome, msg, failed = "FAIL", str(e).replace("\n", " "), failed + 1
        except Exception as e:  # a traceback l2p should have turned into a message
            outcome, msg, failed = "FAIL", f"{type(e).__name__}: {e}".replace("\n", " "), failed + 1
            traceback.print_exc()
        shutil.rmtree(tmp, ignore_errors=True)
        rows.append((c.name, outcome, f"{time.perf_counter() - t0:.1f}s", msg))
        print(f"  {outcome:8s} {c.name}", file=sys.stderr, flush=True)
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"\n{'case':{width}s}  {'outcome':8s} {'time':>6s}  message")
    for name, outcome, secs, msg in rows:
        print(f"{name:{width}s}  {outcome:8s} {secs:>6s}  {msg}")
    print(f"\n{len(rows)} cases, {failed} failed")
    if a.soak:
        print(f"\nsoak: {a.soak} samples of {bundle} in one process")
        rss = soak(Ctx(bundle=bundle, folder=folder, cond=cond, tmp=work, soak=a.soak), report=print)
        print(f"growth from {min(rss)} to {max(rss)} samples: {rss[max(rss)] - rss[min(rss)]:+.1f} MiB")
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
