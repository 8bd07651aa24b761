"""The interface of the served model ``l2p``: a contract for clients, derived from a bundle.

Inputs (every tensor has a leading batch dimension of 1: one image per request; Triton batches
concurrent requests itself):

- ``prompt`` BYTES ``[1, 1]`` for bundles with text encoders, or else the conditioning arrays
  named as the transformer's inputs (FP32, e.g. ``encoder_hidden_states [1, T, D]``,
  ``pooled_projections [1, D]``);
- ``seed`` INT64 ``[1, 1]`` (required);
- optional ``steps`` INT32, ``full_steps`` INT32, ``method`` BYTES, ``cfg_scale`` FP32 (each ``[1, 1]``;
  ``cfg_scale`` omitted = the family's diffusers default, as ``l2p sample``);
- for the guided families (SD3, PixArt, DiT, Qwen-Image): optional ``negative_prompt`` BYTES ``[1, 1]``
  (default ``""``, as diffusers) with prompts, or the ``negative_<name>`` arrays (shaped like their
  conditional ones) with conditioning arrays; DiT's negative is its null class.

Outputs: ``latents`` FP32 ``[1, L, C]`` (the packed final latents, as ``l2p sample`` saves them
in ``latents.npz``) always, and ``image`` UINT8 ``[1, H, W, 3]`` when the bundle has a VAE decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..bundle import Bundle
from ..families import family
from ..sampling.families import runtime_for
from ..sampling.conditioning import NEGATIVE

MODEL_NAME = "l2p"

#: Triton configuration type -> the protocol's datatype name (what clients pass to ``InferInput``)
WIRE_TYPES = {"TYPE_STRING": "BYTES", "TYPE_FP32": "FP32", "TYPE_INT32": "INT32", "TYPE_INT64": "INT64",
              "TYPE_UINT8": "UINT8"}

OPTIONS = ("steps", "full_steps", "method", "cfg_scale")


@dataclass(frozen=True)
class TensorDecl:
    """One input or output of the model as ``config.pbtxt`` declares it."""

    name: str
    dtype: str  # Triton configuration type, e.g. "TYPE_FP32"
    dims: tuple[int, ...]  # without the batch dimension; -1: any size
    optional: bool = False

    @property
    def wire_type(self) -> str:
        return WIRE_TYPES[self.dtype]


@dataclass(frozen=True)
class Interface:
    """What the model ``l2p`` takes and returns for one bundle."""

    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...]
    takes_prompts: bool
    cond_names: tuple[str, ...]
    has_image: bool

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)


def takes_prompts(bundle: Bundle) -> bool:
    """Whether the bundle has text encoders (and their tokenizers) to encode prompts."""
    return bool(bundle.manifest.get("tokenizers"))


def interface(bundle: Bundle) -> Interface:
    """The model's inputs and outputs for ``bundle``.

    Conditioning dims are all ``-1`` (only the rank is fixed) so that a wrong shape reaches the
    model and gets the same message as ``l2p sample --conditioning``.
    """
    rt = runtime_for(bundle)
    spec = bundle.spec("transformer")
    prompts = takes_prompts(bundle)
    if prompts:
        cond: tuple[TensorDecl, ...] = (TensorDecl("prompt", "TYPE_STRING", (1,)),)
    else:
        cond = tuple(TensorDecl(n, "TYPE_FP32", (-1,) * (len(spec.input(n).shape) - 1)) for n in rt.cond_names)
    if family(bundle.family).cfg_scale is not None:  # a guided family: its negative inputs
        negatives = (TensorDecl("negative_prompt", "TYPE_STRING", (1,), optional=True),) if prompts else \
            tuple(TensorDecl(NEGATIVE + t.name, t.dtype, t.dims, optional=True) for t in cond)
        cond = (*cond, *negatives)
    inputs = (*cond, TensorDecl("seed", "TYPE_INT64", (1,)),
              TensorDecl("steps", "TYPE_INT32", (1,), optional=True),
              TensorDecl("full_steps", "TYPE_INT32", (1,), optional=True),
              TensorDecl("method", "TYPE_STRING", (1,), optional=True),
              TensorDecl("cfg_scale", "TYPE_FP32", (1,), optional=True))
    latents = TensorDecl("latents", "TYPE_FP32", tuple(int(d) for d in rt.latent_shape(1)[1:]))
    has_image = bundle.has("vae_decoder")
    outputs = (latents, TensorDecl("image", "TYPE_UINT8", (-1, -1, 3))) if has_image else (latents,)
    return Interface(inputs, outputs, prompts, tuple(rt.cond_names), has_image)
