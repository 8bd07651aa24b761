"""Torch-free tokenization with the ``tokenizers`` library (``tokenizer.json`` in the bundle)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError


class Tokenizer:
    """Pads/truncates to a fixed length as the diffusers pipelines do (``padding="max_length"``).

    Args:
        path: ``tokenizer.json``.
        max_length: the encoder's fixed sequence length.
        pad_id: padding token id.
        truncate: cut long prompts (CLIP in FLUX does); else refuse them with an error.
    """

    def __init__(self, path: Path, max_length: int, pad_id: int, truncate: bool, name: str) -> None:
        from tokenizers import Tokenizer as _Tok

        try:
            self.tok = _Tok.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exceptions for unreadable files
            raise ArtifactError(f"{name} tokenizer {path} cannot be read ({e}); re-export the bundle") from None
        self.tok.no_padding()
        self.tok.no_truncation()
        self.max_length = max_length
        self.pad_id = pad_id
        self.truncate = truncate
        self.name = name

    def __call__(self, prompts: Sequence[str]) -> np.ndarray:
        """Token ids ``(len(prompts), max_length)`` int64."""
        out = np.full((len(prompts), self.max_length), self.pad_id, dtype=np.int64)
        for r, text in enumerate(prompts):
            ids = self.tok.encode(text).ids
            if len(ids) > self.max_length:
                if not self.truncate:
                    raise InputError(
                        f"prompt {r} has {len(ids)} tokens for the {self.name} tokenizer, which takes at most "
                        f"{self.max_length}; shorten it (or export with a larger --max-sequence-length)"
                    )
                ids = ids[: self.max_length - 1] + ids[-1:]  # keep the end-of-text token
            out[r, : len(ids)] = ids
        return out


def load_tokenizers(root: Path, entries: dict[str, Any]) -> dict[str, Tokenizer]:
    """Tokenizers listed in the bundle manifest, keyed by text-encoder graph name."""
    return {
        enc: Tokenizer(root / e["path"], int(e["max_length"]), int(e["pad_id"]), e.get("kind") == "clip", enc)
        for enc, e in entries.items()
    }
