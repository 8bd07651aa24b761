"""Failures that are not l2p's own errors, as one line: what happened, where, what to do.

The CLI prints :class:`~l2p.errors.L2PError` messages as they are. Other exceptions come from the
environment (a full or read-only disk, a path under a file, a name too long), from native
libraries (ONNX Runtime, safetensors, a Rust panic in ``tokenizers``) or from damaged input
files (a broken deflate stream, JSON nested too deep). :func:`describe` turns those into one
line; it returns ``None`` for anything else, which is a bug in l2p and keeps its traceback.

Torch-free; imports no optional library (exceptions are recognised by their type's name).
"""

from __future__ import annotations

import errno
import zipfile
import zlib

#: what to do, by errno
_OS_HINTS = {
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.ENOSPC: "the disk is full: free some space or choose a folder on another disk",
    errno.EDQUOT: "the disk quota is exhausted: free some space or choose another folder",
    errno.EACCES: "permission denied: check the folder's permissions or choose another one",
    errno.EPERM: "operation not permitted: check the folder's permissions or choose another one",
    errno.ENAMETOOLONG: "a file name is too long: choose a shorter path or name",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "a folder is where a file was expected: choose another path",
    errno.ENOENT: "it does not exist: check the path",
    errno.EEXIST: "it exists already: choose another path",
    errno.ELOOP: "too many symbolic links: check the path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n)",
    errno.EIO: "an input/output error: check the disk",
}


def first_line(e: BaseException, limit: int = 400) -> str:
    """The first non-empty line of an exception's message (its type's name when it has none)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:limit]


def _os_error(e: OSError) -> str:
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    what = e.strerror or first_line(e)
    hint = _OS_HINTS.get(e.errno or -1, "check the path and the disk")
    return f"{what}{f' ({where})' if where else ''}: {hint}"


def describe(e: BaseException, command: str = "") -> str | None:
    """One line for a failure that is not an :class:`~l2p.errors.L2PError`, or None (a bug)."""
    kind, module = type(e).__name__, type(e).__module__ or ""
    during = f" during l2p {command}" if command else ""
    if isinstance(e, OSError) and not module.startswith("onnxruntime"):
        return _os_error(e)
    if module.startswith("onnxruntime"):
        return (f"ONNX Runtime failed{during}: {kind}: {first_line(e)}; the graph does not fit its inputs or is "
                "damaged: re-export the bundle (or try another --backend)")
    if kind == "PanicException":  # pyo3: a Rust panic in a native library, a BaseException subclass
        return (f"a native library (e.g. tokenizers) panicked{during}: {first_line(e)}; a file it read is "
                "broken: re-export the bundle")
    if kind == "SafetensorError":
        return (f"cannot read a .safetensors file{during}: {first_line(e)}; it is truncated or damaged: "
                "copy or download the model again")
    if isinstance(e, UnicodeError):
        return (f"text that is not valid UTF-8{during} ({first_line(e)}); give UTF-8 text and files (check "
                "the terminal's or the file's encoding)")
    if isinstance(e, (zlib.error, zipfile.BadZipFile, EOFError)):
        return (f"a compressed or archive file is damaged{during} ({kind}: {first_line(e)}); write or copy "
                "it again")
    if isinstance(e, RecursionError):
        return (f"an input is nested too deeply to read{during} (e.g. a JSON file with thousands of nested "
                "levels); it is damaged or forged: re-export or write it again")
    if isinstance(e, MemoryError):
        return (f"out of memory{during}; use fewer rows, a smaller latent size or a machine with more memory "
                "(or the input claims absurd sizes)")
    return None
