""".npz archives read member by member (feature files, run directories' geometry files).

:class:`NpzArchive` reads each member's ``.npy`` header (shape, dtype) and loads an array only on request,
after checking its declared size against the member and the memory available. Object arrays are refused.
Every problem (not a zip, damaged header or stream, truncated member, bad CRC) is one DncsimError naming
the file and member.
"""
from __future__ import annotations

import math
import os
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from dncsim.common import DncsimError

__all__ = ["NpzArchive", "available_memory", "format_bytes"]

#: what reading a damaged member can raise (numpy's header parser, zipfile, zlib)
_READ_ERRORS = (ValueError, SyntaxError, tokenize.TokenError, RecursionError, EOFError, OSError, zlib.error,
                zipfile.BadZipFile, struct.error, TypeError, KeyError, NotImplementedError, OverflowError)


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable`` of /proc/meminfo; else free pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def format_bytes(n: int) -> str:
    """``n`` bytes as '1.5 GB' (powers of 1000)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} bytes"


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class NpzArchive:
    """A ``.npz`` file opened for lazy reading: ``names`` (member names without ``.npy``, in file order),
    :meth:`header` -> (shape, dtype) without reading the data, :meth:`read` -> the array.

    Use as a context manager. DncsimError, naming the file, when it is missing or not an .npz archive."""

    def __init__(self, path, what: str = ".npz file"):
        self.path = Path(path)
        self.what = what
        if not self.path.is_file():
            raise DncsimError(f"{self.path}: no such file")
        try:
            self._zip = zipfile.ZipFile(self.path)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error, NotImplementedError) as exc:
            raise DncsimError(self._not_an_archive(exc)) from None
        self._members: Dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            self._members.setdefault(name, info)
        self._headers: Dict[str, Tuple[tuple, np.dtype, int]] = {}

    def _not_an_archive(self, exc: BaseException) -> str:
        try:
            with open(self.path, "rb") as f:
                magic = f.read(6)
        except OSError:
            magic = b""
        if magic == b"\x93NUMPY":
            return (f"{self.path}: a single .npy array, not an .npz archive (a {self.what} holds named arrays: "
                    "save it with numpy.savez)")
        if self.path.stat().st_size == 0:
            return f"{self.path}: empty file (expected an {self.what})"
        return f"{self.path}: not a readable {self.what} ({_short(exc)})"

    @property
    def names(self) -> List[str]:
        return list(self._members)

    def __contains__(self, name: str) -> bool:
        return name in self._members

    def __enter__(self) -> "NpzArchive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def _damaged(self, name: str, exc: BaseException) -> DncsimError:
        return DncsimError(f"{self.path}: array '{name}' is damaged ({_short(exc)})")

    def header(self, name: str) -> Tuple[tuple, np.dtype]:
        """(shape, dtype) of member ``name`` from its ``.npy`` header (the data is not read)."""
        if name not in self._headers:
            info = self._members[name]
            try:
                with self._zip.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"unsupported .npy format version {version}")
            except _READ_ERRORS as exc:
                raise self._damaged(name, exc) from None
            if any(n < 0 for n in shape):
                raise DncsimError(f"{self.path}: array '{name}' declares a negative dimension in shape {shape}")
            nbytes = math.prod(shape) * dtype.itemsize
            self._headers[name] = (tuple(shape), dtype, nbytes)
        shape, dtype, _ = self._headers[name]
        return shape, dtype

    def read(self, name: str) -> np.ndarray:
        """The array ``name``. DncsimError when it is an object array, declares more data than the member
        holds, would not fit in the memory available (saying what it needs), or its data is damaged."""
        shape, dtype = self.header(name)
        nbytes = self._headers[name][2]
        if dtype.hasobject:
            raise DncsimError(f"{self.path}: array '{name}' holds Python objects (dtype {dtype}); only plain "
                              "numeric arrays are read (pickled objects never are)")
        info = self._members[name]
        if nbytes > info.file_size:
            raise DncsimError(f"{self.path}: array '{name}' declares shape {shape} of {dtype} "
                              f"({format_bytes(nbytes)}) but the file holds {format_bytes(info.file_size)} for it "
                              "(damaged or forged)")
        free = available_memory()
        if nbytes > free:
            raise DncsimError(f"{self.path}: array '{name}' (shape {shape}, {dtype}) needs {format_bytes(nbytes)} of "
                              f"memory; {format_bytes(free)} is available")
        try:
            with self._zip.open(info) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except MemoryError:
            raise DncsimError(f"{self.path}: array '{name}' (shape {shape}, {dtype}) needs {format_bytes(nbytes)} of "
                              "memory, more than could be allocated") from None
        except _READ_ERRORS as exc:
            raise self._damaged(name, exc) from None
