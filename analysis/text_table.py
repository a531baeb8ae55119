"""Plain-text tables for terminals: left-aligned text columns, right-aligned numbers."""
from __future__ import annotations

from typing import Sequence

from dncsim.common import printable


def _is_number(s: str) -> bool:
    try:
        float(s.split()[0].replace("%", ""))
        return True
    except (ValueError, IndexError):
        return False


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]], *, title: str = "") -> str:
    """Render ``rows`` under ``header`` with aligned columns (numbers right-aligned) and an optional title;
    control characters in any cell (a label name from a user's file) are escaped, never sent to the terminal."""
    cells = [[printable(c, None) for c in header]] + [[printable(c, None) for c in r] for r in rows]
    widths = [max(len(r[k]) for r in cells) for k in range(len(header))]
    numeric = [all(_is_number(r[k]) or r[k] in ("", "-", "n/a") for r in cells[1:]) for k in range(len(header))]

    def line(r):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip()

    out = [printable(title, None)] if title else []
    out += [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)
