"""Geometry files ``geometry/row_<r>.npz``: writing one row's class geometries and reading them back."""
from __future__ import annotations

import io
from typing import Dict, List

import numpy as np

from dncsim.common import DncsimError



def geometry_npz_bytes(geoms: Dict[int, object]) -> bytes:
    """The ``geometry/row_<r>.npz`` content for task index -> ClassGeometry: ``task<k>/<field>`` for every
    field of ``to_arrays()``, plus ``task<k>/pairs`` (P, 2) and ``task<k>/axes`` (P, d) float32."""
    arrays = {}
    for k, g in geoms.items():
        for name, value in g.to_arrays().items():
            arrays[f"task{k}/{name}"] = value.numpy()
        arrays[f"task{k}/pairs"] = g.pairs().cpu().numpy()
        arrays[f"task{k}/axes"] = g.axes().detach().cpu().numpy().astype(np.float32)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _check_geometry_shapes(path, k: int, headers: Dict[str, tuple]) -> None:
    """DncsimError unless task k's geometry fields (name -> (shape, dtype)) are numeric with the shapes of
    ``ClassGeometry.to_arrays``: ``classes`` (C,), ``means`` (C, d), (C,) vectors, (C, C) matrices, ``ddof`` ()."""
    if "classes" not in headers or "means" not in headers:
        missing = ", ".join(f for f in ("classes", "means") if f not in headers)
        raise DncsimError(f"{path}: task {k}: geometry arrays lack {missing}")
    c = headers["classes"][0][0] if len(headers["classes"][0]) == 1 else -1
    means = headers["means"][0]
    d = means[1] if len(means) == 2 else -1
    want = {"classes": (c,), "counts": (c,), "means": (c, d), "var": (c,), "m4": (c,), "ddof": ()}
    for name, (shape, dtype) in headers.items():
        expected = want.get(name, (c, c))
        if c < 1 or d < 1 or shape != expected or dtype.kind not in "fiub":
            raise DncsimError(f"{path}: task {k}: '{name}' has shape {shape} dtype {dtype}; expected {expected} "
                              "numbers (damaged, or written by another dncsim version?)")


def load_geometry(path) -> Dict[int, object]:
    """Task index -> ClassGeometry from a ``geometry/row_<r>.npz`` file (only the fields ``from_arrays``
    needs are read; ``dncsim.npzfile``). DncsimError naming the file when it is not a readable geometry
    file: not an .npz, damaged, a member that is not ``task<k>/<field>``, or no task at all."""
    from dncsim.analysis.geometry import ClassGeometry
    from dncsim.npzfile import NpzArchive
    fields_ = ClassGeometry.__dataclass_fields__
    out = {}
    with NpzArchive(path, "geometry file (.npz)") as z:
        tasks: Dict[int, List[str]] = {}
        for name in z.names:
            head, sep, field_ = name.partition("/")
            if not (sep and head.startswith("task") and head[4:].isascii() and head[4:].isdigit()):
                raise DncsimError(f"{path}: array '{name}' is not task<k>/<field> (not a geometry file)")
            tasks.setdefault(int(head[4:]), []).append(field_)
        if not tasks:
            raise DncsimError(f"{path}: holds no task's geometry")
        for k in sorted(tasks):
            _check_geometry_shapes(path, k, {f: z.header(f"task{k}/{f}") for f in tasks[k] if f in fields_})
            arrays = {f: z.read(f"task{k}/{f}") for f in tasks[k] if f in fields_}
            try:
                out[k] = ClassGeometry.from_arrays(arrays)
            except (DncsimError, ValueError, TypeError, RuntimeError, IndexError) as exc:
                raise DncsimError(f"{path}: task {k}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                                  " (damaged, or written by another dncsim version?)") from None
    return out
