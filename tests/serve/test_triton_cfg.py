"""Classifier-free guidance through the model ``l2p`` on a real tritonserver (a tiny SD3 bundle).

Reference: ``l2p sample --conditioning`` with the same rows (conditional and ``negative_*``), seed
and ``--cfg-scale``; independent of the server, and itself checked against diffusers'
``StableDiffusion3Pipeline`` in ``tests/export/test_sd3.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from l2p.atomic import load_npz, save_npz
from l2p.cli import main

from .conftest import STEPS, needs_tritonserver, request, running_server

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

pytestmark = needs_tritonserver

CONFIG = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
              num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=12,
              pos_embed_max_size=16)


@pytest.fixture(scope="module")
def sd3_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.export.conftest import export_tiny

    torch.manual_seed(0)
    return export_tiny(diffusers.SD3Transformer2DModel(**CONFIG).eval(), tmp_path_factory, "sd3_serve", (8, 8))


@pytest.fixture(scope="module")
def cond() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {"encoder_hidden_states": (2, 6, 16), "pooled_projections": (2, 12)}
    out = {k: rng.standard_normal(s).astype(np.float32) for k, s in arrays.items()}
    out.update({f"negative_{k}": rng.standard_normal(s).astype(np.float32) for k, s in arrays.items()})
    return out


@pytest.fixture(scope="module")
def sd3_server(sd3_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_server(sd3_bundle, tmp_path_factory.mktemp("triton_sd3")) as srv:
        yield srv


def cli_latents(bundle: Path, cond: dict[str, np.ndarray], row: int, seed: int, out: Path, *extra: str) -> np.ndarray:
    """``l2p sample`` of conditioning row ``row`` alone (a one-row COND.npz) from ``seed``."""
    save_npz(out.parent / f"{out.name}.npz", **{k: v[row:row + 1] for k, v in cond.items()})
    assert main(["sample", str(bundle), "--conditioning", str(out.parent / f"{out.name}.npz"),
                 "--steps", str(STEPS), "--seed", str(seed), "--out", str(out), *extra]) == 0
    return load_npz(out / "latents.npz")["final"]


def test_guided_requests_equal_l2p_sample(sd3_server: Any, sd3_bundle: Path, cond: dict[str, np.ndarray],
                                          tmp_path: Path) -> None:
    import tritonclient.grpc as grpc
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    meta = http.InferenceServerClient(sd3_server.http_url).get_model_metadata("l2p")
    assert {"negative_encoder_hidden_states", "negative_pooled_projections", "cfg_scale"} <= \
        {t["name"] for t in meta["inputs"]}
    cases = [  # (protocol, row, seed, request options, the same flags for l2p sample)
        (http, 0, 3, {}, []),  # the family default (SD3: 7)
        (grpc, 1, 4, {"cfg_scale": 4.0}, ["--cfg-scale", "4"]),
        (http, 1, 5, {"cfg_scale": 4.0, "method": "taylorseer2", "full_steps": 3},
         ["--cfg-scale", "4", "--method", "taylorseer2", "--full-steps", "3"]),
    ]
    results = []
    for k, (mod, row, seed, opts, flags) in enumerate(cases):
        client = mod.InferenceServerClient(sd3_server.http_url if mod is http else sd3_server.grpc_url)
        got = client.infer("l2p", request(mod, cond, row, seed, **opts)).as_numpy("latents")
        ref = cli_latents(sd3_bundle, cond, row, seed, tmp_path / f"c{k}", *flags)
        assert np.array_equal(got, ref), k  # the same guided loop on the same engines: bit-exact
        results.append(got)
    plain = {k: v for k, v in cond.items() if not k.startswith("negative_")}
    client = http.InferenceServerClient(sd3_server.http_url)
    off = client.infer("l2p", request(http, plain, 0, 3, cfg_scale=1.0)).as_numpy("latents")
    assert not np.allclose(off, results[0], atol=1e-3)  # guidance changes the result
    assert np.array_equal(off, cli_latents(sd3_bundle, plain, 0, 3, tmp_path / "off", "--cfg-scale", "1"))
    with pytest.raises(InferenceServerException) as e:  # guidance on (the default) without negatives
        client.infer("l2p", request(http, plain, 0, 3))
    assert "negative_encoder_hidden_states" in e.value.message() and "\n" not in e.value.message()
    again = client.infer("l2p", request(http, cond, 0, 3)).as_numpy("latents")
    assert np.array_equal(again, results[0])  # and the server still serves
