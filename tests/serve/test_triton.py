"""The model ``l2p`` on a real tritonserver, queried with tritonclient over HTTP and gRPC.

Reference: ``l2p sample`` (the CLI) with the same conditioning row, seed and options.
"""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from l2p.atomic import load_npz, save_npz
from l2p.cli import main
from l2p.metrics import psnr_db

from .conftest import STEPS, needs_tritonserver, request

pytestmark = needs_tritonserver


@pytest.fixture(scope="module")
def cond_file(flux_cond: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cond") / "cond.npz"
    save_npz(path, **flux_cond)
    return path


def cli_latents(bundle: Path, cond_file: Path, row: int, seed: int, out: Path, *extra: str) -> np.ndarray:
    """``l2p sample`` of conditioning row ``row`` alone (a one-row COND.npz; ``--index`` would give the
    row's image of the whole run, from seed + row) from ``seed``."""
    one = out.parent / f"{out.name}-row.npz"
    save_npz(one, **{k: v[row:row + 1] for k, v in load_npz(cond_file).items()})
    assert main(["sample", str(bundle), "--conditioning", str(one), "--steps", str(STEPS),
                 "--seed", str(seed), "--out", str(out), *extra]) == 0
    return load_npz(out / "latents.npz")["final"]


def cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The one-line message ``l2p`` prints for a bad argument (without ``error: ``)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err[len("error: "):]


@pytest.fixture()
def connect(server: Any) -> Any:
    """``connect(mod)``: a tritonclient of ``mod`` (http or grpc) for the server; all closed at the end
    (Triton waits for open HTTP connections when it stops)."""
    import tritonclient.http as http

    made: list[Any] = []

    def make(mod: Any) -> Any:
        c = mod.InferenceServerClient(server.http_url if mod is http else server.grpc_url)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_http_and_grpc_equal_l2p_sample(connect: Any, flux_bundle: Path, cond_file: Path,
                                        flux_cond: dict[str, np.ndarray], tmp_path: Path) -> None:
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    cases = [  # (protocol, row, seed, request options, the same options for l2p sample)
        (http, 0, 3, {}, []),
        (grpc, 1, 11, {}, []),
        (http, 1, 5, {"method": "taylorseer2", "full_steps": 3}, ["--method", "taylorseer2", "--full-steps", "3"]),
        (grpc, 0, 2**40, {"steps": 4, "method": "fora", "full_steps": 2, "cfg_scale": 1.0},
         ["--method", "fora", "--full-steps", "2", "--steps", "4"]),
    ]
    for k, (mod, row, seed, opts, flags) in enumerate(cases):
        client = connect(mod)
        got = client.infer("l2p", request(mod, flux_cond, row, seed, **opts)).as_numpy("latents")
        ref = cli_latents(flux_bundle, cond_file, row, seed, tmp_path / str(k), *flags)
        assert got.shape == ref.shape == (1, 16, 16) and got.dtype == np.float32
        assert psnr_db(got, ref) >= 60, (k, psnr_db(got, ref))
        assert np.array_equal(got, ref), k  # the same loop on the same engines: bit-exact


def test_16_concurrent_clients_each_equal_their_single_request(connect: Any, flux_cond: dict[str, np.ndarray]) -> None:
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    jobs = [(http if i % 2 else grpc, i % 2, 100 + i) for i in range(16)]
    one = connect(http)
    single = [one.infer("l2p", request(http, flux_cond, row, seed)).as_numpy("latents") for _, row, seed in jobs]
    results: list[Any] = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def client(i: int) -> None:
        mod, row, seed = jobs[i]
        c = connect(mod)
        start.wait(timeout=60)
        try:
            results[i] = c.infer("l2p", request(mod, flux_cond, row, seed)).as_numpy("latents")
        except Exception as e:  # reported below with the request it belongs to
            results[i] = e

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    for i, (res, ref) in enumerate(zip(results, single)):
        assert isinstance(res, np.ndarray), (i, res)
        assert np.array_equal(res, ref), i
    assert not np.array_equal(single[0], single[2])  # different seeds, different images
    # Triton did batch them: fewer executions than requests
    stats = connect(http).get_inference_statistics("l2p")["model_stats"][0]
    assert stats["execution_count"] < stats["inference_count"]


def test_health_metadata_and_metrics(server: Any, connect: Any) -> None:
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    h, g = connect(http), connect(grpc)
    assert h.is_server_live() and h.is_server_ready() and h.is_model_ready("l2p")
    assert g.is_server_live() and g.is_server_ready() and g.is_model_ready("l2p")
    with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=5) as r:
        assert r.status == 200
    meta = h.get_model_metadata("l2p")
    types = {t["name"]: t["datatype"] for t in meta["inputs"]}
    assert types == {"encoder_hidden_states": "FP32", "pooled_projections": "FP32", "seed": "INT64",
                     "steps": "INT32", "full_steps": "INT32", "method": "BYTES", "cfg_scale": "FP32"}
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]] == [("latents", "FP32", [-1, 16, 16])]
    with urllib.request.urlopen(server.metrics_url, timeout=5) as r:
        text = r.read().decode()
    assert 'nv_inference_request_success{model="l2p",version="1"}' in text


def test_bad_requests_get_the_cli_message_and_the_server_keeps_serving(
        connect: Any, flux_bundle: Path, cond_file: Path, flux_cond: dict[str, np.ndarray], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import tritonclient.grpc as grpc
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    sample = ["sample", str(flux_bundle), "--conditioning", str(cond_file), "--out", str(tmp_path / "o")]
    bad_cond = tmp_path / "bad.npz"
    save_npz(bad_cond, encoder_hidden_states=flux_cond["encoder_hidden_states"][:1],
             pooled_projections=np.zeros((1, 23), np.float32))
    shape_msg = cli_error(capsys, ["sample", str(flux_bundle), "--conditioning", str(bad_cond),
                                   "--out", str(tmp_path / "o")]).split(": ", 1)[1]  # after the file's name
    cases = [  # (protocol, request, the message l2p sample gives)
        (http, request(http, flux_cond, 0, 1, method="nope"), cli_error(capsys, [*sample, "--method", "nope"])),
        (grpc, request(grpc, flux_cond, 0, 1, steps=0), cli_error(capsys, [*sample, "--steps", "0"])),
        (http, request(http, flux_cond, 0, 1, method="taylorseer2"), cli_error(capsys, [*sample, "--method",
                                                                                       "taylorseer2"])),
        (http, request(http, flux_cond, 0, -5), cli_error(capsys, [*sample, "--seed", "-5"])),
        (grpc, request(grpc, {**flux_cond, "pooled_projections": np.zeros((2, 23), np.float32)}, 0, 1), shape_msg),
        (http, request(http, flux_cond, 0, 1, cfg_scale=7.5), cli_error(capsys, [*sample, "--cfg-scale", "7.5"])),
        (http, request(http, flux_cond, slice(0, 2), 1), "one image per request"),  # two rows in one request
    ]
    wrong_dtype = request(http, {k: v.astype(np.float64) for k, v in flux_cond.items()}, 0, 1)
    for mod, inputs, message in cases:
        client = connect(mod)
        with pytest.raises(InferenceServerException) as e:
            client.infer("l2p", inputs)
        assert message in e.value.message(), (message, e.value.message())
        assert "\n" not in e.value.message()
    with pytest.raises(InferenceServerException, match="FP64"):  # Triton itself checks the declared dtypes
        connect(http).infer("l2p", wrong_dtype)
    good = connect(http).infer("l2p", request(http, flux_cond, 0, 3)).as_numpy("latents")
    assert np.array_equal(good, cli_latents(flux_bundle, cond_file, 0, 3, tmp_path / "after"))
    assert connect(http).is_server_ready()
