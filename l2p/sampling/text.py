"""Torch-free tokenization with the ``tokenizers`` library (``tokenizer.json`` in the bundle)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError
from ..failures import first_line


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
            with native_stderr_held():
                self.tok = _Tok.from_file(str(path))
        except Exception as e:  # tokenizers raises plain Exceptions for unreadable files
            raise ArtifactError(f"{name} tokenizer {path} cannot be read ({first_line(e)}); re-export the "
                                "bundle") from None
        except BaseException as e:
            if not is_rust_panic(e):
                raise
            raise ArtifactError(f"{name} tokenizer {path} cannot be read: the tokenizers library panicked "
                                f"({first_line(e)}); its tokenizer.json is broken: re-export the bundle") from None
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
            check_text(text, f"prompt {r}")
            try:
                with native_stderr_held():
                    ids = self.tok.encode(text).ids
            except BaseException as e:
                if not (is_rust_panic(e) or type(e) is Exception):  # tokenizers' own failures
                    raise
                raise ArtifactError(f"the {self.name} tokenizer failed on prompt {r} ({first_line(e)}); its "
                                    "tokenizer.json is broken: re-export the bundle") from None
            if len(ids) > self.max_length:
                if not self.truncate:
                    raise InputError(
                        f"prompt {r} has {len(ids)} tokens for the {self.name} tokenizer, which takes at most "
                        f"{self.max_length}; shorten it (or export with a larger --max-sequence-length)"
                    )
                ids = ids[: self.max_length - 1] + ids[-1:]  # keep the end-of-text token
            out[r, : len(ids)] = ids
        return out


def check_text(text: str, what: str) -> None:
    """Refuse text that is not valid Unicode (undecodable bytes from the command line)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start:e.end].encode("utf-8", "surrogateescape")
        raise InputError(f"{what} is not valid UTF-8 text (bytes {bad!r} at character {e.start}); give UTF-8 "
                         "text (check the terminal's or the file's encoding)") from None


def is_rust_panic(e: BaseException) -> bool:
    """pyo3's ``PanicException`` (a Rust panic inside a native library; a BaseException subclass)."""
    return type(e).__name__ == "PanicException"


@contextmanager
def native_stderr_held() -> Iterator[None]:
    """Hold what is written to file descriptor 2 inside the block; replay it unless the block raised.

    A Rust panic prints its message (with ``RUST_BACKTRACE``, a whole backtrace) straight to
    fd 2 before pyo3 raises ``PanicException``; l2p reports that exception in one line itself.
    """
    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if ok and os.fstat(held.fileno()).st_size:
                held.seek(0)
                os.write(2, held.read())


def load_tokenizers(root: Path, entries: dict[str, Any]) -> dict[str, Tokenizer]:
    """Tokenizers listed in the bundle manifest, keyed by text-encoder graph name."""
    return {
        enc: Tokenizer(root / e["path"], int(e["max_length"]), int(e["pad_id"]), e.get("kind") == "clip", enc)
        for enc, e in entries.items()
    }
