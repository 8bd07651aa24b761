"""Export wrappers for the text encoders and the VAE decoder of a pipeline folder.

Graphs:
    clip (CLIPTextModel, FLUX's text_encoder):
                           input_ids int64 [batch, L] -> last_hidden_state, pooler_output
    clip with projection (CLIPTextModelWithProjection, SD3's text_encoder and text_encoder_2):
                           input_ids int64 [batch, L] -> penultimate_hidden_state, text_embeds
                           (what StableDiffusion3Pipeline takes: ``hidden_states[-2]`` and the projection)
    t5 (T5EncoderModel, FLUX's text_encoder_2, SD3's text_encoder_3):
                           input_ids int64 [batch, L] -> last_hidden_state
    vae_decoder:           latent [batch, C, h, w] (as the transformer sees it, scaled)
                           -> image [batch, 3, H, W] in [-1, 1]
"""

from __future__ import annotations

import torch
from torch import nn

from ..spec import IOSpec, TensorSpec
from .base import ExportGraph


class _Clip(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids, output_hidden_states=False)
        return out.last_hidden_state, out.pooler_output


class _ClipWithProjection(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(input_ids, output_hidden_states=True)
        return out.hidden_states[-2], out.text_embeds  # StableDiffusion3Pipeline._get_clip_prompt_embeds


class _T5(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, output_hidden_states=False)[0]


class _VaeDecoder(nn.Module):
    """Undo the pipeline's latent scaling, then decode (as ``FluxPipeline`` does)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae
        self.scaling = float(vae.config.scaling_factor)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        z = latent / self.scaling + self.shift
        return self.vae.decode(z, return_dict=False)[0]


def clip_graph(name: str, model: nn.Module, max_length: int) -> ExportGraph:
    d = model.config.hidden_size
    spec = IOSpec(
        (TensorSpec("input_ids", "int64", ("batch", max_length)),),
        (TensorSpec("last_hidden_state", "float32", ("batch", max_length, d)),
         TensorSpec("pooler_output", "float32", ("batch", d))),
    )
    return ExportGraph(name, _Clip(model.eval()), spec, {"batch": 2}, dynamic=("batch",))


def clip_projection_graph(name: str, model: nn.Module, max_length: int) -> ExportGraph:
    c = model.config
    spec = IOSpec(
        (TensorSpec("input_ids", "int64", ("batch", max_length)),),
        (TensorSpec("penultimate_hidden_state", "float32", ("batch", max_length, c.hidden_size)),
         TensorSpec("text_embeds", "float32", ("batch", c.projection_dim))),
    )
    return ExportGraph(name, _ClipWithProjection(model.eval()), spec, {"batch": 2}, dynamic=("batch",))


def t5_graph(name: str, model: nn.Module, max_length: int) -> ExportGraph:
    d = model.config.d_model
    spec = IOSpec(
        (TensorSpec("input_ids", "int64", ("batch", max_length)),),
        (TensorSpec("last_hidden_state", "float32", ("batch", max_length, d)),),
    )
    return ExportGraph(name, _T5(model.eval()), spec, {"batch": 2}, dynamic=("batch",))


def vae_decoder_graph(vae: nn.Module, latent_hw: tuple[int, int]) -> tuple[ExportGraph, int]:
    """The VAE decoder graph and its scale factor (image pixels per latent pixel)."""
    c = vae.config
    factor = 2 ** (len(c.block_out_channels) - 1)
    h, w = latent_hw
    spec = IOSpec(
        (TensorSpec("latent", "float32", ("batch", c.latent_channels, h, w)),),
        (TensorSpec("image", "float32", ("batch", c.out_channels, h * factor, w * factor)),),
    )
    return ExportGraph("vae_decoder", _VaeDecoder(vae.eval()), spec, {"batch": 2}, dynamic=("batch",)), factor


def trace_args(graph: ExportGraph, vocab: int = 2) -> tuple[torch.Tensor, ...]:
    """Sample tensors for tracing an encoder/decoder graph."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for t in graph.spec.inputs:
        shape = t.concrete(graph.trace_dims)
        if t.dtype == "int64":
            out.append(torch.randint(0, vocab, shape, generator=gen))
        else:
            out.append(torch.randn(shape, generator=gen))
    return tuple(out)
