"""A bundle with text encoders and a VAE decoder (the built-in ``tiny-flux``) on a real tritonserver:
``prompt`` in, ``image`` and ``latents`` out, equal to ``l2p sample --prompt``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from l2p.atomic import load_npz
from l2p.cli import main
from l2p.models import BUILTIN

from .conftest import free_ports, needs_tritonserver

pytestmark = [needs_tritonserver,
              pytest.mark.skipif(not (BUILTIN["tiny-flux"] / "model_index.json").is_file(),
                                 reason="the built-in tiny model is not in this checkout")]
STEPS = 4


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from l2p.export.exporter import export_bundle

    return export_bundle("tiny-flux", tmp_path_factory.mktemp("tiny") / "bundle", check=False, log=lambda s: None)


@pytest.fixture(scope="module")
def tiny_server(tiny_bundle: Path) -> Iterator[Any]:
    from l2p.serve.local import local_server
    from l2p.serve.repository import RepoSettings
    from l2p.serve.tritonserver import Ports

    with local_server(tiny_bundle, RepoSettings(steps=STEPS), Ports(*free_ports()), log=lambda s: None) as server:
        yield server


def test_prompt_gives_the_image_and_latents_of_l2p_sample(tiny_server: Any, tiny_bundle: Path,
                                                          tmp_path: Path) -> None:
    import tritonclient.grpc as grpc
    from PIL import Image

    prompt, seed = "a red circle at the top left", 4
    client = grpc.InferenceServerClient(tiny_server.grpc_url)
    meta = client.get_model_metadata("l2p", as_json=True)
    assert [t["name"] for t in meta["inputs"]] == ["prompt", "seed", "steps", "full_steps", "method", "cfg_scale"]
    assert [t["name"] for t in meta["outputs"]] == ["latents", "image"]
    inputs = [grpc.InferInput("prompt", [1, 1], "BYTES"), grpc.InferInput("seed", [1, 1], "INT64")]
    inputs[0].set_data_from_numpy(np.array([[prompt.encode()]], dtype=object))  # as the README shows
    inputs[1].set_data_from_numpy(np.array([[seed]], dtype=np.int64))
    res = client.infer("l2p", inputs)
    client.close()
    assert main(["sample", str(tiny_bundle), "--prompt", prompt, "--steps", str(STEPS), "--seed", str(seed),
                 "--out", str(tmp_path)]) == 0
    ref_image = np.asarray(Image.open(tmp_path / "image_000.png"))
    image = res.as_numpy("image")
    assert image.dtype == np.uint8 and image.shape == (1, *ref_image.shape) and ref_image.shape[2] == 3
    assert np.array_equal(image[0], ref_image)
    assert np.array_equal(res.as_numpy("latents"), load_npz(tmp_path / "latents.npz")["final"])
