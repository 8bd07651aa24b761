"""The model ``l2p`` inside Triton's Python backend: one :class:`Sampler` per model instance.

Runs in the backend's stub process (``model.py`` from :mod:`.triton_model` creates it). Requests
of one ``execute`` call (a dynamic batch) are sampled one by one, each as its own run, so a
request's result does not depend on what was batched with it. A bad request gets an error
response with l2p's one-line message; the instance keeps serving.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, L2PError, MismatchError, MissingDependencyError
from ..sampling.pipeline import Sampler
from .contract import Interface, interface
from .jobs import Defaults, parse_job, run_job

#: names of the repository parameters in ``config.pbtxt``
PARAMS = ("l2p_bundle", "l2p_method", "l2p_steps", "l2p_full_steps", "l2p_backend", "l2p_threads",
          "l2p_guidance")


def check_stub_numpy(pb_utils: Any) -> None:
    """Refuse to serve when the stub's array hand-over is broken.

    Backend stubs built with pybind11 older than 2.12 (Triton 2.51's among them) read numpy's
    ``PyArray_Descr.elsize`` at its numpy-1 offset. numpy 2 moved that field, so under numpy 2
    every item size reads as 0: an input arrives as copies of its first element, BYTES inputs
    are garbage and outputs are sent empty. A tensor the stub wraps around memory (as it wraps
    request inputs) shows it; the DLPack hand-over from a stub tensor is the stub's own code.
    """
    probe = np.arange(1, 5, dtype=np.float32)
    back = np.asarray(pb_utils.Tensor.from_dlpack("probe", pb_utils.Tensor("source", probe)).as_numpy())
    if back.shape != probe.shape or not np.array_equal(back, probe):
        raise MissingDependencyError(
            f"this Triton Python backend stub cannot exchange arrays with numpy {np.__version__} (it was built "
            "for numpy<2); run the stub in an environment with numpy<2: `l2p serve` does that itself, with "
            "tritonserver of your own set the model's EXECUTION_ENV_PATH parameter to such an environment"
        )


def repository_params(model_config: dict[str, Any]) -> dict[str, str]:
    """The ``l2p_*`` parameters of ``config.pbtxt`` as strings ("" when unset)."""
    given = model_config.get("parameters", {})
    return {k: str(given.get(k, {}).get("string_value", "")) for k in PARAMS}


def open_sampler(params: dict[str, str], model_dir: Path, kind: str, device_id: int) -> Sampler:
    """The instance's sampler: the bundle path is relative to the model folder unless absolute."""
    bundle = Path(params["l2p_bundle"])
    device = f"cuda:{device_id}" if kind.upper() == "GPU" else "cpu"
    return Sampler(bundle if bundle.is_absolute() else model_dir / bundle, backend=params["l2p_backend"],
                   threads=int(params["l2p_threads"]) if params["l2p_threads"] else None,
                   guidance_scale=float(params["l2p_guidance"]), device=device)


class L2PModel:
    """What ``TritonPythonModel`` delegates to; ``pb_utils`` is Triton's backend utilities module."""

    def __init__(self, args: dict[str, Any], pb_utils: Any) -> None:
        check_stub_numpy(pb_utils)
        self.pb = pb_utils
        params = repository_params(json.loads(args["model_config"]))
        self.sampler = open_sampler(params, Path(args["model_repository"]),
                                    str(args.get("model_instance_kind", "CPU")),
                                    int(args.get("model_instance_device_id", 0) or 0))
        self.iface: Interface = interface(self.sampler.bundle)
        self.defaults = Defaults(int(params["l2p_steps"]), params["l2p_method"],
                                 int(params["l2p_full_steps"]) if params["l2p_full_steps"] else None)

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request, in order."""
        return [self._answer(r) for r in requests]

    def _answer(self, request: Any) -> Any:
        pb = self.pb
        try:
            arrays = {}
            for name in self.iface.input_names:
                t = pb.get_input_tensor_by_name(request, name)
                arrays[name] = None if t is None else np.array(t.as_numpy())  # own copy of shared memory
            out = run_job(self.sampler, parse_job(arrays, self.iface, self.defaults), self.iface.has_image)
            return pb.InferenceResponse(output_tensors=[pb.Tensor(k, v) for k, v in out.items()])
        except L2PError as e:  # the client's mistake, or the model's (NaN...): l2p's one-line message
            client = isinstance(e, (InputError, MismatchError))
            return pb.InferenceResponse(error=self._error(str(e), "INVALID_ARG" if client else "INTERNAL"))
        except Exception as e:  # a bug in l2p: answer this request, log, keep serving the next ones
            traceback.print_exc(file=sys.stderr)
            return pb.InferenceResponse(error=self._error(f"internal error in l2p ({type(e).__name__}: {e}); "
                                                          "the server log has the traceback", "INTERNAL"))

    def _error(self, message: str, code: str) -> Any:
        err = self.pb.TritonError
        value = getattr(err, code, None)  # error codes exist since Triton 23.10's backend
        return err(message) if value is None else err(message, value)
