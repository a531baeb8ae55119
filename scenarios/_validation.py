"""Strict config models and one-line validation messages with did-you-mean suggestions.

Every config section derives from :class:`StrictModel` (unknown keys are errors). A pydantic
``ValidationError`` becomes ONE line naming the dotted key, what was given and what is accepted,
via :func:`one_line_error`.
"""
from __future__ import annotations

import difflib
import re
import typing
from typing import Any, List, Optional, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = ["StrictModel", "one_line_error", "did_you_mean", "dotted"]


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are rejected, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def did_you_mean(word: str, options: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or an empty string."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def dotted(loc: Sequence[Any], prefix: str = "") -> str:
    """('stream', 'labelings', 1) -> 'prefix.stream.labelings[1]'."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _unwrap(tp):
    """Model classes reachable from an annotation (through Optional, Union, list, dict, Annotated)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin is None:
        return [tp] if isinstance(tp, type) and issubclass(tp, BaseModel) else []
    found = []
    for arg in typing.get_args(tp):
        found += _unwrap(arg)
    return found


def _walk(model: type, loc: Sequence[Any]):
    """Follow ``loc`` through the schema: (displayed path parts, field names where it ends or None).

    Discriminator tags that pydantic puts into ``loc`` (e.g. 'shapes' in ('source', 'shapes', 'size'))
    select the union member they name and are left out of the displayed path.
    """
    candidates, shown = [model], []
    for part in loc:
        if isinstance(part, int) or not candidates:
            shown.append(part)
            continue
        tagged = [m for m in candidates if any(
            typing.get_origin(f.annotation) is typing.Literal and part in typing.get_args(f.annotation)
            for f in m.model_fields.values())]
        if len(candidates) > 1 and tagged:   # a union's discriminator tag: not part of the user's key path
            candidates = tagged
            continue
        shown.append(part)
        nxt = []
        for m in candidates:
            if part in m.model_fields:
                nxt += _unwrap(m.model_fields[part].annotation)
        candidates = nxt
    names: Optional[List[str]] = None
    if candidates:
        names = []
        for m in candidates:
            names += [n for n in m.model_fields if n not in names]
    return shown, names


def one_line_error(exc: ValidationError, model: type, prefix: str = "") -> str:
    """The first error of ``exc`` as one line: dotted key, the problem, accepted values, a suggestion."""
    err = exc.errors(include_url=False)[0]
    loc = list(err["loc"])
    kind = err["type"]
    given = err.get("input")
    if kind == "extra_forbidden":
        key = loc[-1]
        shown, allowed = _walk(model, loc[:-1])
        where = dotted(shown, prefix) or "the top level"
        if not allowed:
            return f"{where}: unknown key '{key}'"
        return f"{where}: unknown key '{key}'{did_you_mean(key, allowed)}; accepted keys: {', '.join(allowed)}"
    shown, _ = _walk(model, loc)
    path = dotted(shown, prefix) or prefix or "config"
    ctx = err.get("ctx") or {}
    if kind == "union_tag_invalid":       # a bad discriminator value: name the key that holds it
        path = f"{path}.{str(ctx.get('discriminator', '')).strip(chr(39))}"
    if kind in ("literal_error", "enum", "union_tag_invalid"):
        expected = ctx.get("expected") or ctx.get("expected_tags") or ""
        options = re.findall(r"'([^']*)'", str(expected))
        value = ctx.get("tag", given)
        return (f"{path}: {value!r} is not one of {', '.join(options)}"
                f"{did_you_mean(value, options) if isinstance(value, str) else ''}")
    if kind == "union_tag_not_found":
        return f"{path}: missing key '{ctx.get('discriminator', '').strip(chr(39))}'"
    if kind == "missing":
        return f"{path}: required key is missing"
    msg = err["msg"]
    msg = msg[len("Value error, "):] if msg.startswith("Value error, ") else msg
    shown_given = given is not None and not isinstance(given, (dict, list)) and repr(given) not in msg
    suffix = f" (got {given!r})" if shown_given else ""
    return f"{path}: {msg[0].lower() + msg[1:]}{suffix}"
