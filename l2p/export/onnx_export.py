"""ONNX export of one :class:`~l2p.export.base.ExportGraph` with ``torch.onnx.export(dynamo=True)``.

- Symbolic dims come from the I/O spec (``torch.export.Dim`` per dim name).
- fp16/bf16 graphs cast float inputs to the compute dtype inside the graph and outputs back to
  float32, so the graph boundary is always float32 (TensorRT 11 is strongly typed: precision
  is decided here, in the graph).
- Large graphs (> 1 GiB of weights) are saved with external data next to the ``.onnx`` file;
  the 2 GiB protobuf limit then never applies.
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import L2PError
from ..precision import Precision, torch_dtype
from .base import ExportGraph

EXTERNAL_DATA_BYTES = 1 << 30
OPSET = 18


class _CastIO(nn.Module):
    """Run ``inner`` in ``dtype`` while the graph boundary stays float32."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = inner
        self.dtype = dtype

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...] | torch.Tensor:
        cast = [a.to(self.dtype) if a.is_floating_point() else a for a in args]
        out = self.inner(*cast)
        if isinstance(out, tuple):
            return tuple(o.float() for o in out)
        return out.float()


def _dynamic_shapes(graph: ExportGraph, module: nn.Module) -> tuple[object, ...]:
    """``dynamic_shapes`` in the structure of ``module.forward``'s signature (``*rest`` nests)."""
    dims = {n: torch.export.Dim(n, min=1, max=1 << 20) for n in graph.dynamic}
    per_input = [
        {i: dims[d] for i, d in enumerate(t.shape) if isinstance(d, str) and d in dims} or None
        for t in graph.spec.inputs
    ]
    params = list(inspect.signature(module.forward).parameters.values())
    positional = [p for p in params if p.kind is not p.VAR_POSITIONAL]
    if len(positional) < len(params):  # forward(a, b, *rest)
        n = len(positional)
        rest = tuple(per_input[n:])
        return (*per_input[:n], rest) if rest else tuple(per_input[:n])
    return tuple(per_input)


def param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def export_graph(graph: ExportGraph, path: str | os.PathLike[str], precision: Precision,
                 sample_args: tuple[torch.Tensor, ...]) -> Path:
    """Export ``graph`` to ``path`` (a ``.onnx`` file; ``path + '.data'`` for external data).

    ``sample_args`` are float32 tensors in the order of ``graph.spec.inputs``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module: nn.Module = graph.module
    if precision is not Precision.FP32:
        module = _CastIO(module.to(torch_dtype(precision)), torch_dtype(precision))
        target = graph.module
    else:
        target = module
    dyn = _dynamic_shapes(graph, target)
    if isinstance(module, _CastIO):
        dyn = (tuple(_flatten(dyn)),)  # forward(*args): one nested tuple
    limit = int(os.environ.get("L2P_EXTERNAL_DATA_BYTES", EXTERNAL_DATA_BYTES))  # tests force it low
    external = param_bytes(module) > limit
    tmp = path.with_name(path.name + ".partial.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch").setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                module, sample_args, dynamo=True, input_names=graph.spec.input_names,
                output_names=graph.spec.output_names, dynamic_shapes=dyn, opset_version=OPSET,
                verbose=False, optimize=True,
            )
        except Exception as e:  # the exporter raises many types; summarise for the user
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise L2PError(f"ONNX export of the {graph.name} graph failed: {first}") from e
    assert program is not None
    program.save(str(tmp), external_data=external)
    os.replace(tmp, path)  # the data file (if any) is renamed below
    data_tmp = Path(str(tmp) + ".data")
    if data_tmp.exists():
        _relocate_external_data(path, data_tmp)
    return path


def _flatten(x: object) -> list[object]:
    out: list[object] = []
    for v in x if isinstance(x, tuple) else (x,):
        out.extend(_flatten(v) if isinstance(v, tuple) else [v])
    return out


def _relocate_external_data(path: Path, data_tmp: Path) -> None:
    """Point the graph's external-data references at ``<name>.data`` and rename the file."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    final = path.with_name(path.name + ".data")
    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        if uses_external_data(t):
            for e in t.external_data:
                if e.key == "location":
                    e.value = final.name
    os.replace(data_tmp, final)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
