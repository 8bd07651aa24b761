"""Reading the files of a predictor folder: each a regular file inside it (no links), matching its
size and sha256 in ``predictor.json``; the coefficients read with their ``.npy`` headers checked
first; ``predictor.onnx`` checked to be exactly the graph l2p builds from those coefficients.

Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import sha256_file
from ..bundle import check_external_data
from ..errors import ArtifactError, InputError
from ..safe_io import load_npz, read_bytes, safe_relpath
from ..spec import TensorSpec
from .graph import build_predictor_graph
from .table import CoefficientTable

MANIFEST = "predictor.json"
COEFFICIENTS = "coefficients.npz"
ONNX_FILE = "predictor.onnx"
IO_SPEC = "io_spec.json"
FILES = (COEFFICIENTS, ONNX_FILE, IO_SPEC)
REMAKE = "re-calibrate it"
MAX_GRAPH_BYTES = 1 << 20  # predictor.onnx holds 2N x K + N float32 constants (N <= 1000, K <= 16): ~130 KiB


def verify_files(root: Path, m: dict[str, Any]) -> None:
    files = m["files"]
    if sorted(files) != sorted(FILES):
        raise ArtifactError(f"predictor {root}: {MANIFEST} lists files {sorted(files)}, expected {sorted(FILES)}")
    for rel in FILES:
        info = files[rel]
        if not isinstance(info, dict) or set(info) != {"sha256", "size"}:
            raise ArtifactError(f"predictor {root}: bad file entry for '{rel}' in {MANIFEST}; re-calibrate it")
        if not os.path.lexists(root / rel):
            raise ArtifactError(f"predictor {root}: '{rel}' is missing; re-calibrate it")
        path = safe_relpath(root, rel, f"predictor {root}", kind="file")  # a regular file, not a link
        size = path.stat().st_size
        if size != info["size"]:
            raise ArtifactError(
                f"predictor {root}: '{rel}' has {size} bytes, {MANIFEST} says {info['size']}: "
                "it is truncated or was changed; re-calibrate it"
            )
        if sha256_file(path) != info["sha256"]:
            raise ArtifactError(
                f"predictor {root}: '{rel}' does not match its sha256 in {MANIFEST}: it was corrupted or "
                "tampered with; re-calibrate it"
            )


def load_table(root: Path, m: dict[str, Any]) -> CoefficientTable:
    n, k = m["num_steps"], m["K"]
    want = {"W": (n, k), "U": (n, k), "V": (n,)}

    def header(key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:  # before anything is read
        if key not in want or dtype != np.float64 or shape != want[key]:
            raise ValueError(f"['{key}'] is {dtype}{list(shape)}, expected float64{list(want.get(key, ()))} "
                             f"for {n} steps and K={k} (arrays {sorted(want)})")

    try:
        arrays = load_npz(root / COEFFICIENTS, nofollow=True, check=header)
    except (ValueError, OSError, ArtifactError) as e:
        raise ArtifactError(f"predictor {root}: cannot read {COEFFICIENTS} ({e}); re-calibrate it") from None
    if sorted(arrays) != sorted(want):
        raise ArtifactError(f"predictor {root}: {COEFFICIENTS} holds {sorted(arrays)}, expected {sorted(want)}")
    if len(m["schedule"]) != m["full_steps"]:
        raise ArtifactError(f"predictor {root}: schedule has {len(m['schedule'])} steps, full_steps says "
                            f"{m['full_steps']}; re-calibrate it")
    try:
        return CoefficientTable(arrays["W"], arrays["U"], arrays["V"], tuple(m["schedule"]), k, m["uses_latents"])
    except InputError as e:
        raise ArtifactError(f"predictor {root}: invalid coefficients: {e}; re-calibrate it") from None


def bound_graph(root: Path, name: str, table: CoefficientTable, feature_spec: TensorSpec,
                 latent_spec: TensorSpec | None) -> bytes:
    """The predictor graph rebuilt from the coefficients, after checking that ``predictor.onnx``
    computes the same thing (same graph, constants, opset and IR version); its bytes."""
    import onnx
    from google.protobuf.message import DecodeError

    check_external_data(root / ONNX_FILE, root, set(), f"predictor {root}", REMAKE)  # constants inline
    built = build_predictor_graph(table, feature_spec, latent_spec, name=f"l2p_predictor_{name}")
    try:
        stored = onnx.load_model_from_string(read_bytes(root / ONNX_FILE, f"predictor {root}", MAX_GRAPH_BYTES))
    except (DecodeError, ValueError) as e:
        raise ArtifactError(f"predictor {root}: {ONNX_FILE} is not a readable ONNX file ({e}); {REMAKE}") from None
    same = (stored.graph == built.graph and list(stored.opset_import) == list(built.opset_import)
            and stored.ir_version == built.ir_version)
    if not same:
        raise ArtifactError(
            f"predictor {root}: {ONNX_FILE} is not the graph of its {COEFFICIENTS} (K={table.K}, "
            f"{table.num_steps} steps, baked float32 constants): it was replaced or edited; refusing to run "
            f"it; {REMAKE}"
        )
    return built.SerializeToString()
