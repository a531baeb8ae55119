"""Checkpoint generations: ``checkpoint.pt`` and ``checkpoint.previous.pt`` (SHA-256 records in the
manifest), the newest verified one loaded, damaged ones quarantined to ``checkpoint.damaged.pt``."""
from __future__ import annotations

import hashlib
import io
import os
from typing import List, Optional, Sequence

from dncsim.common import DncsimError, atomic_write_bytes
from dncsim.rundir.layout import CHECKPOINT, CHECKPOINT_DAMAGED, CHECKPOINT_PREVIOUS


class CheckpointGenerations:
    """The checkpoint methods of :class:`dncsim.rundir.writer.RunDirectory` (``self.path``, ``self.file``)."""

    def save_checkpoint(self, state: dict, generations: Sequence[dict] = ()) -> List[dict]:
        """Write ``state`` as the newest checkpoint generation. ``generations``: the records of the verified
        generations on disk (what the manifest holds). The current ``checkpoint.pt`` becomes
        ``checkpoint.previous.pt`` (a rename) only when a record vouches for it; otherwise the atomic write
        replaces it and ``checkpoint.previous.pt`` stays, so at every moment a recorded good generation is
        on disk. Returns the records to put in the manifest: per file on disk, newest first, ``file``,
        ``experiences_done``, ``sha256``, ``bytes``."""
        import torch
        buf = io.BytesIO()
        torch.save(state, buf)
        data = buf.getvalue()
        newest = {"file": CHECKPOINT, "experiences_done": int(state["experiences_done"]),
                  "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        current = next((g for g in generations if g.get("file") == CHECKPOINT), None)
        kept = next((g for g in generations if g.get("file") == CHECKPOINT_PREVIOUS), None)
        if current is not None and self.file(CHECKPOINT).exists():
            try:
                os.replace(self.file(CHECKPOINT), self.file(CHECKPOINT_PREVIOUS))
            except OSError as exc:
                raise DncsimError(f"{self.file(CHECKPOINT)}: cannot keep it as the previous generation "
                                  f"({exc.strerror or exc})") from None
            kept = dict(current, file=CHECKPOINT_PREVIOUS)
        atomic_write_bytes(self.file(CHECKPOINT), data)
        return [newest] + ([kept] if kept is not None else [])

    def load_checkpoint(self, generations: Optional[Sequence[dict]] = None):
        """The newest verified checkpoint generation: ``(state, note)``, or ``(None, None)`` without one.

        Verified: its SHA-256 matches a manifest record (or, without records, it loads) and it loads with
        ``weights_only=True``. ``note`` is one line when the newest was passed over. DncsimError when files exist
        but none is usable. Sets ``verified`` (usable records, newest first) and ``damaged``.
        """
        import torch
        self.verified, self.damaged = [], []
        files = [f for f in (CHECKPOINT, CHECKPOINT_PREVIOUS) if self.file(f).exists()]
        if not files:
            return None, None
        records = list(generations or [])
        problems, usable = [], []
        for name in files:
            data = self.file(name).read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            record = next((r for r in records if r.get("sha256") == sha), None)
            if records and record is None:
                problems.append(f"{name} does not match any checksum in manifest.json (damaged or incomplete)")
                self.damaged.append(name)
                continue
            try:
                state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            except Exception as exc:      # noqa: BLE001 - any unreadable file is the same problem
                problems.append(f"{name} is unreadable ({type(exc).__name__})")
                self.damaged.append(name)
                continue
            if record is not None and int(state.get("experiences_done", -1)) != int(record["experiences_done"]):
                problems.append(f"{name} holds another experience than its record says")
                self.damaged.append(name)
                continue
            usable.append(state)
            self.verified.append({"file": name, "experiences_done": int(state["experiences_done"]), "sha256": sha,
                                  "bytes": len(data)})
        if not usable:
            raise DncsimError(f"{self.path}: no usable checkpoint ({'; '.join(problems)}); use --force to start the "
                              "run over")
        self.verified.sort(key=lambda r: -r["experiences_done"])
        best = max(usable, key=lambda s: int(s["experiences_done"]))
        newest_recorded = max((int(r["experiences_done"]) for r in records), default=int(best["experiences_done"]))
        note = None
        if problems or int(best["experiences_done"]) < newest_recorded:
            which = "newest" if self.verified[0]["file"] == CHECKPOINT else "previous"
            note = (f"{self.path}: {'; '.join(problems) or 'the newest checkpoint is missing'}: resuming from the "
                    f"{which} generation, after experience {int(best['experiences_done']) - 1}"
                    + (f" ({', '.join(self.damaged)} kept as {CHECKPOINT_DAMAGED})" if self.damaged else ""))
        return best, note

    def quarantine_damaged(self) -> None:
        """Move the generations :meth:`load_checkpoint` found damaged to ``checkpoint.damaged.pt`` (the
        last one moved stays there), so that no later save rotates one over a good generation."""
        for name in getattr(self, "damaged", []):
            if self.file(name).exists():
                os.replace(self.file(name), self.file(CHECKPOINT_DAMAGED))
        self.damaged = []
