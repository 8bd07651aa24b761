"""Precision is one enum, not a boolean per dtype."""

from __future__ import annotations

from enum import Enum

from .errors import InputError


class Precision(str, Enum):
    """Numeric precision of a graph's weights and activations (decided in the ONNX graph)."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @classmethod
    def parse(cls, value: str | Precision) -> Precision:
        try:
            return cls(value)
        except ValueError:
            raise InputError(f"unknown precision '{value}'; choose one of fp32, fp16, bf16") from None


#: relative-error tolerance per precision for an exported forward vs. PyTorch fp32
FORWARD_RTOL = {Precision.FP32: 1e-5, Precision.FP16: 2e-2, Precision.BF16: 5e-2}


def torch_dtype(p: Precision):  # type: ignore[no-untyped-def]
    """The torch dtype for a precision (import torch lazily: this module stays torch-free)."""
    import torch

    return {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}[p]
