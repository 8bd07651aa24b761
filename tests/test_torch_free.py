"""The runtime packages never import torch: sampling works where ``import torch`` fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

BLOCK_TORCH = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _Block())
"""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)


def test_runtime_modules_do_not_import_torch() -> None:
    r = _run("""
        import l2p.engine, l2p.predictor.graph, l2p.predictor.artifact, l2p.predictor.presets
        import l2p.calibration.calibrate, l2p.calibration.fidelity, l2p.sampling.pipeline, l2p.bench
        import l2p.cli, l2p.cli.options, l2p.demo, l2p.validation.backends, l2p.inspect, l2p.versions
        from l2p.families import FAMILIES
        runtimes = [f.runtime_class() for f in FAMILIES]  # every family's runtime and latent record
        import l2p.serve.backend, l2p.serve.client, l2p.serve.local, l2p.serve.repository, l2p.serve.triton_model
        assert "torch" not in sys.modules
        print("ok")
    """)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_sample_and_calibrate_without_torch(flux_bundle: Path, tmp_path: Path) -> None:
    import numpy as np

    from l2p.atomic import save_npz

    rng = np.random.default_rng(0)
    save_npz(tmp_path / "cond.npz", encoder_hidden_states=rng.standard_normal((2, 8, 32)).astype(np.float32),
             pooled_projections=rng.standard_normal((2, 24)).astype(np.float32))
    out = tmp_path / "run"
    r = _run(f"""
        from l2p.cli import main
        assert main(["sample", "{flux_bundle}", "--conditioning", "{tmp_path / 'cond.npz'}", "--steps", "6",
                     "--seed", "3", "--out", "{out}"]) == 0
        assert main(["sample", "{flux_bundle}", "--conditioning", "{tmp_path / 'cond.npz'}", "--steps", "6",
                     "--method", "taylorseer2", "--full-steps", "3", "--out", "{out}/ts"]) == 0
        assert "torch" not in sys.modules
    """)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["image_000.png", "image_001.png"]
    assert (out / "latents.npz").is_file() and (out / "run.json").is_file()
