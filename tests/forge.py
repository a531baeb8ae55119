"""Damaged and forged .npz files, byte by byte (shared by test_bad_files.py and test_fuzz_files.py)."""
import io
import zipfile

import numpy as np

from tests.support.tiny import DROP, tiny_config


def npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=True)
    return buf.getvalue()


def npy_with_header(header: str, data: bytes = b"") -> bytes:
    """A version 1.0 .npy member whose header text is ``header`` (padded to 64 bytes as numpy does)."""
    text = header + " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode("latin-1") + data


def zip_bytes(members: dict, compressed: bool = False) -> bytes:
    """An .npz of ``members`` name -> ndarray or raw member bytes (names get ``.npy`` unless they have a dot)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED) as z:
        for name, value in members.items():
            data = value if isinstance(value, bytes) else npy_bytes(value)
            z.writestr(name if "." in name else f"{name}.npy", data)
    return buf.getvalue()


def corrupt_member(data: bytes, name: str, at: float = 0.5, length: int = 8) -> bytes:
    """``data`` (an .npz) with ``length`` bytes of member ``name``'s stored (compressed) data inverted,
    ``at`` of the way into it; the zip directory is left as it was."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.getinfo(name if "." in name else f"{name}.npy")
    local = data[info.header_offset:info.header_offset + 30]
    start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
    pos = start + int(info.compress_size * at)
    out = bytearray(data)
    for i in range(pos, min(pos + length, start + info.compress_size)):
        out[i] ^= 0xFF
    return bytes(out)


def good_arrays(n: int = 24, d: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return {"features": rng.normal(size=(n, d)) + np.eye(d)[y] * 3, "labels": y}


# --- one tiny finished run per session ------------------------------------------------------------------

TINY_RUN = tiny_config({"scenario.source.probe_repeats": 1, "output.checkpoints": DROP}, name="tiny", seed=1,
                       objective={"name": "simclr"})
_RUNS = {}


def finished_run(tmp_path_factory):
    """The directory of a tiny finished run (two tasks, two experiences), made once per test session;
    copy it before changing anything in it."""
    if "run" not in _RUNS:
        from dncsim.simulator.config import run_from_mapping
        from dncsim.simulator.run import run
        path = tmp_path_factory.mktemp("tiny_run") / "run"
        run(run_from_mapping(TINY_RUN), path, quiet=True, stream=io.StringIO())
        _RUNS["run"] = path
    return _RUNS["run"]
