"""Paths and reads inside an artifact folder (a bundle, a predictor) that cannot leave it.

Bundles and predictors are downloaded and shared, so everything in them is untrusted:

- :func:`safe_relpath` turns a relative path from a manifest into a path under the folder, refusing
  absolute paths, ``..`` and every symbolic link on the way (a link inside a bundle could make l2p
  read or write a file outside it). Links are found with ``os.lstat``: nothing about a link's
  target (whether it exists, its size) is looked at or shown.
- :func:`read_bytes` opens a regular file with ``O_NOFOLLOW`` and a size bound.
- :func:`read_json` reads a metadata JSON file with bounded size and nesting.
- :func:`load_npz` reads an ``.npz`` after checking every array's header against what it stores.

Errors are :class:`~l2p.errors.ArtifactError` with one line. Torch-free.
"""

from __future__ import annotations

import json
import math
import os
import stat
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .errors import ArtifactError
from .limits import BOUNDS

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO planted in a bundle must not block the open


def _link_error(what: str, root: Path, rel: str) -> ArtifactError:
    return ArtifactError(
        f"{what}: '{rel}' in {root} is a symbolic link; l2p does not follow links inside a bundle or "
        "predictor (they can point outside it): replace it with the real file or folder"
    )


def safe_relpath(root: str | os.PathLike[str], rel: str, what: str, kind: str = "any") -> Path:
    """``root / rel`` after checking that it stays inside ``root`` without following any link.

    Args:
        root: the artifact folder (itself may be a link: the user named it).
        rel: a relative POSIX path from a manifest or made by l2p (``"predictors/NAME/x.npz"``).
        what: what is being opened, for messages.
        kind: ``"file"`` or ``"dir"`` to also require that it exists as that; ``"any"`` allows a
            path that does not exist yet (to be written).

    Raises:
        ArtifactError: absolute or escaping path, a symbolic link (or a non-folder) on the way,
            or (with ``kind``) a missing path or one of another kind.
    """
    root = Path(root)
    if not isinstance(rel, str) or not rel or "\0" in rel or "\\" in rel or rel.startswith("/") \
            or os.path.isabs(rel) or ":" in rel.split("/")[0]:
        raise ArtifactError(f"{what}: path {rel!r} is not a relative path; files of a bundle or predictor "
                            "must be relative paths inside it")
    parts = PurePosixPath(rel).parts
    if ".." in parts:
        raise ArtifactError(f"{what}: path '{rel}' points outside the bundle {root}; refusing to read it")
    path = root
    for n, part in enumerate(parts):
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if kind != "any":
                raise ArtifactError(f"{what}: '{rel}' is missing from {root}") from None
            return root.joinpath(*parts)
        except OSError as e:
            raise ArtifactError(f"{what}: cannot look at '{rel}' in {root} ({e.strerror})") from None
        if stat.S_ISLNK(st.st_mode):
            raise _link_error(what, root, "/".join(parts[: n + 1]))
        last = n == len(parts) - 1
        if not last and not stat.S_ISDIR(st.st_mode):
            raise ArtifactError(f"{what}: '{'/'.join(parts[: n + 1])}' in {root} is not a folder")
        if last and kind == "file" and not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{what}: '{rel}' in {root} is not a regular file")
        if last and kind == "dir" and not stat.S_ISDIR(st.st_mode):
            raise ArtifactError(f"{what}: '{rel}' in {root} is not a folder")
    return path


def make_dirs(root: str | os.PathLike[str], rel: str, what: str) -> Path:
    """Create the folder ``root / rel`` (and its parents), refusing links on the way; returns it."""
    root = Path(root)
    path = root
    for part in PurePosixPath(rel).parts:
        path = path / part
        safe_relpath(root, path.relative_to(root).as_posix(), what)
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
    return safe_relpath(root, rel, what, kind="dir")


def open_regular(path: str | os.PathLike[str], what: str) -> int:
    """``os.open`` a regular file for reading without following a final link; returns the fd."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
    except OSError as e:
        if os.path.islink(path):
            raise ArtifactError(f"{what}: {path} is a symbolic link; l2p does not follow links inside a "
                                "bundle or predictor: replace it with the real file") from None
        raise ArtifactError(f"{what}: cannot open {path} ({e.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ArtifactError(f"{what}: {path} is not a regular file")
    return fd


def read_bytes(path: str | os.PathLike[str], what: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` (no final link), refusing files over ``max_bytes``."""
    fd = open_regular(path, what)
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise ArtifactError(f"{what}: {path} has {size} bytes, more than the {max_bytes} bytes l2p reads "
                                "for it; it is not a file l2p wrote")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:  # it grew after the size check
        raise ArtifactError(f"{what}: {path} has more than the {max_bytes} bytes l2p reads for it")
    return data


def json_depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    depth, stack = 0, [(obj, 0)]
    while stack:
        value, d = stack.pop()
        if isinstance(value, (dict, list)):
            depth = max(depth, d + 1)
            stack.extend((v, d + 1) for v in (value.values() if isinstance(value, dict) else value))
    return depth


def parse_json(text: str | bytes, what: str, fix: str) -> Any:
    """``json.loads`` with the nesting bound of :data:`~l2p.limits.BOUNDS`; one-line errors."""
    limit = int(BOUNDS["json_depth"].hi)
    try:
        value = json.loads(text)
    except RecursionError:
        raise ArtifactError(f"{what} is nested too deeply to be metadata (more than {limit} levels); {fix}") \
            from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError; so are huge ints
        raise ArtifactError(f"{what} is not valid JSON ({str(e)[:200]}); {fix}") from None
    if json_depth(value) > limit:
        raise ArtifactError(f"{what} is nested more than {limit} levels deep; it is not metadata l2p wrote; {fix}")
    return value


def read_json(path: str | os.PathLike[str], what: str, fix: str, expect: type = dict) -> Any:
    """Read a metadata JSON file: a regular file (no final link) of at most ``json_bytes``, nested
    at most ``json_depth`` levels, holding an ``expect`` (default: an object)."""
    value = parse_json(read_bytes(path, what, int(BOUNDS["json_bytes"].hi)), what, fix)
    if not isinstance(value, expect):
        raise ArtifactError(f"{what} holds a JSON {type(value).__name__}, expected a JSON "
                            f"{'object' if expect is dict else expect.__name__}; {fix}")
    return value


def _npz_error(path: Path, member: str, problem: str) -> ValueError:
    return ValueError(f"{path.name}: array '{member.removesuffix('.npy')}' {problem}")


def _member_header(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` member's header, checked against the member's stored size."""
    fmt = np.lib.format
    with z.open(info) as m:
        version = fmt.read_magic(m)
        read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if read is None:
            raise _npz_error(path, info.filename, f"has .npy format version {version}; numpy.savez writes 1.0/2.0")
        shape, _, dtype = read(m)
        header = m.tell()
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biufc":
        raise _npz_error(path, info.filename, f"has dtype {dtype}; expected plain numbers (object and structured "
                                              "arrays are refused: they would need pickle)")
    nbytes = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if info.file_size != header + nbytes:
        raise _npz_error(path, info.filename, f"claims shape {list(shape)} {dtype} ({nbytes} bytes), but the "
                                              f"file stores {max(info.file_size - header, 0)} bytes of data")
    return tuple(shape), dtype


#: called with (array name, shape, dtype) from each header before any array is read; raises to refuse
HeaderCheck = Callable[[str, tuple[int, ...], np.dtype], None]


def load_npz(path: str | os.PathLike[str], max_bytes: int | None = None, nofollow: bool = False,
             check: HeaderCheck | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, never unpickling and never allocating more than it holds.

    Each member's ``.npy`` header is read first: only plain numeric dtypes, a shape whose byte size
    equals what the archive stores, at most ``npz_members`` arrays and ``max_bytes`` bytes in all
    (default ``npz_bytes`` of :data:`~l2p.limits.BOUNDS`), then ``check`` (if given) on each
    array's name, shape and dtype. ``nofollow``: refuse a final symbolic link (files inside a
    bundle). Raises ValueError (or OSError, or what ``check`` raises) with a one-line message.
    """
    path = Path(path)
    limit = int(BOUNDS["npz_bytes"].hi) if max_bytes is None else max_bytes
    fd = open_regular(path, f"{path.name}") if nofollow else os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        if not zipfile.is_zipfile(f):  # np.load would guess "pickle" and suggest unpickling it
            raise ValueError(f"{path.name} is not a .npz archive (numpy.savez writes one)")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as z:
                infos = z.infolist()
                if len(infos) > BOUNDS["npz_members"].hi:
                    raise ValueError(f"{path.name} holds {len(infos)} files; an .npz of l2p holds at most "
                                     f"{int(BOUNDS['npz_members'].hi)} arrays")
                total = 0
                for info in infos:
                    if not info.filename.endswith(".npy") or info.filename.count("/"):
                        raise ValueError(f"{path.name} holds '{info.filename[:80]}', which is not an array "
                                         "(numpy.savez writes NAME.npy members only)")
                    shape, dtype = _member_header(z, info, path)
                    if check is not None:
                        check(info.filename[:-4], shape, dtype)
                    total += math.prod(shape) * dtype.itemsize
                    if total > limit:
                        raise ValueError(f"{path.name} holds more than {limit} bytes of arrays, more than l2p "
                                         "reads from one file")
                out = {}
                for info in infos:
                    with z.open(info) as m:
                        out[info.filename[:-4]] = np.lib.format.read_array(m, allow_pickle=False)
                return out
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
            raise ValueError(f"{path.name} is a damaged .npz archive ({type(e).__name__}: {e})") from None
