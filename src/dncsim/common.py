"""What every part of dncsim shares; imports no torch, Avalanche or plotting library.

* :class:`DncsimError` -- the user-error type (a ``ValueError``); the CLI prints it as one line, exit 2.
* :class:`StrictModel` / :func:`one_line_error` -- config sections (unknown keys are errors), one-line messages.
* :func:`read_yaml` / :func:`load_yaml_text` -- YAML checked against :data:`YAML_LIMITS` while read.
* :func:`printable`, :func:`csv_text` (RFC 4180), :func:`output_file`.
* :func:`atomic_write_bytes` / ``_text`` / ``_json`` -- temp file, fsync, rename; regular files only.
"""
from __future__ import annotations

import csv
import difflib
import io
import json
import math
import os
import re
import stat
import tempfile
import typing
from pathlib import Path
from typing import Any, List, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Strict, ValidationError

__all__ = ["DncsimError", "RunFailed", "WriteFailed", "StrictModel", "one_line_error", "did_you_mean", "dotted",
           "model_classes", "read_yaml", "csv_text", "json_text", "finite_json", "atomic_write_bytes",
           "atomic_write_text", "atomic_write_json", "not_a_regular_file", "output_file", "STDOUT_NAMES", "lazy_import",
           "UserPath", "YAML_LIMITS", "load_yaml_text", "printable", "MESSAGE_LIMIT"]


class DncsimError(ValueError):
    """A user-facing error whose message names the field, file or value and what is expected.

    ``exit_code``: the CLI's exit status for it -- 2 (a usage, config or data error) unless a subclass
    says otherwise."""

    exit_code = 2


class RunFailed(DncsimError):
    """A run that started but could not go on (training diverged, a file could not be written): the CLI
    prints the one-line reason and exits 1; the run directory records it and stays resumable.
    ``record``: the details the manifest keeps (plain data)."""

    exit_code = 1

    def __init__(self, message: str, record: Optional[dict] = None):
        super().__init__(message)
        self.record = dict(record or {})


class WriteFailed(RunFailed):
    """A file could not be written (no space, read-only, permission denied); the old file is intact."""


# --- strict config models and one-line messages -----------------------------------------------------

class StrictModel(BaseModel):
    """Base of every config section: unknown keys are rejected, values are validated on assignment, and
    nothing is coerced (pydantic's strict mode: ``true`` is no integer, ``2.0`` no integer, ``1`` no
    boolean, a string no number) except a string to a path (:data:`UserPath`); floats must be finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False, strict=True,
                              allow_inf_nan=False)


#: a ``Path`` field of a config: a YAML string is accepted (strict mode takes only ``Path`` objects)
UserPath = typing.Annotated[Path, Strict(False)]


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


def model_classes(annotation) -> List[type]:
    """The pydantic model classes reachable from a type annotation (through Optional, Union, list,
    dict and Annotated): the config sections a field can hold."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return model_classes(typing.get_args(annotation)[0])
    if origin is None:
        return [annotation] if isinstance(annotation, type) and issubclass(annotation, BaseModel) else []
    found: List[type] = []
    for arg in typing.get_args(annotation):
        found += model_classes(arg)
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
        if tagged and (len(candidates) > 1 or part not in tagged[0].model_fields):   # a union's discriminator tag
            candidates = tagged
            continue
        shown.append(part)
        nxt = []
        for m in candidates:
            if part in m.model_fields:
                nxt += model_classes(m.model_fields[part].annotation)
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
        options = (re.findall(r"'([^']*)'", str(expected))
                   or [o.strip() for o in re.split(r",| or ", str(expected)) if o.strip()])
        value = ctx.get("tag", given)
        return (f"{path}: {value!r} is not one of {', '.join(options)}"
                f"{did_you_mean(value, options) if isinstance(value, str) else ''}")
    if kind == "union_tag_not_found":
        return f"{path}: missing key '{ctx.get('discriminator', '').strip(chr(39))}'"
    if kind == "missing":
        return f"{path}: required key is missing"
    msg = err["msg"]
    msg = msg[len("Value error, "):] if msg.startswith("Value error, ") else msg
    if not loc and not prefix:       # a check across sections: its message names the keys itself
        return msg
    shown_given = given is not None and not isinstance(given, (dict, list)) and repr(given) not in msg
    suffix = f" (got {given!r})" if shown_given else ""
    return f"{path}: {msg[0].lower() + msg[1:]}{suffix}"


# --- YAML ---------------------------------------------------------------------------------------------

#: what :func:`load_yaml_text` accepts: characters of text, nesting levels, aliases (``*name``), values
#: (scalars, lists and mappings, each alias counted as the values it repeats) and digits of an integer
YAML_LIMITS = {"chars": 16 << 20, "depth": 64, "aliases": 1000, "values": 100_000, "int_digits": 100}


class _YamlLimit(Exception):
    def __init__(self, problem: str, mark=None):
        super().__init__(problem)
        self.problem, self.mark = problem, mark


def _at(mark) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


_LOADER = None
_SURROGATE = re.compile("[\ud800-\udfff]")


def _limited_loader():
    """yaml.SafeLoader counting, while it composes, the nesting depth and the values each node stands
    for (an alias standing for the whole node it names), so that a deep or exponentially aliased
    document ("billion laughs") is refused before any Python object is built from it. It builds JSON
    data only: a timestamp stays the text it is (``2001-12-14``); binary, set, omap and pairs are refused."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml
    lim = YAML_LIMITS

    class Loader(yaml.SafeLoader):
        def __init__(self, stream):
            super().__init__(stream)
            self._depth, self._aliases, self._sizes = 0, 0, {}

        def compose_node(self, parent, index):
            alias = self.check_event(yaml.AliasEvent)
            mark = self.peek_event().start_mark
            if alias:
                self._aliases += 1
                if self._aliases > lim["aliases"]:
                    raise _YamlLimit(f"has more than {lim['aliases']} aliases", mark)
            self._depth += 1
            if self._depth > lim["depth"]:
                raise _YamlLimit(f"nested deeper than {lim['depth']} levels", mark)
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
            size = self._sizes.get(id(node))
            if size is None:
                if alias:
                    raise _YamlLimit("has an alias inside the node it names (a structure that contains itself)", mark)
                if isinstance(node, yaml.ScalarNode) and _SURROGATE.search(node.value):
                    raise _YamlLimit("has a lone surrogate escape (\\ud800-\\udfff) in a string: not a character", mark)
                kids = (node.value if isinstance(node, yaml.SequenceNode) else
                        [n for kv in node.value for n in kv] if isinstance(node, yaml.MappingNode) else [])
                sizes = [self._sizes[id(k)] for k in kids]
                size = (1 + sum(v for v, _ in sizes), 1 + max((h for _, h in sizes), default=0))
                self._sizes[id(node)] = size
            if size[0] > lim["values"]:
                raise _YamlLimit(f"has more than {lim['values']} values (an alias counts as every value it repeats)",
                                 mark)
            if self._depth + size[1] > lim["depth"]:
                raise _YamlLimit(f"nested deeper than {lim['depth']} levels (through aliases)", mark)
            return node

        def construct_yaml_int(self, node):
            digits = len(str(node.value).replace("_", "").lstrip("+-"))
            if digits > lim["int_digits"]:
                raise _YamlLimit(f"has an integer of {digits} digits (at most {lim['int_digits']})", node.start_mark)
            return super().construct_yaml_int(node)

    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    Loader.add_constructor("tag:yaml.org,2002:timestamp", lambda loader, node: loader.construct_scalar(node))

    def _refused(loader, node):
        raise _YamlLimit(f"has a {node.tag.rsplit(':', 1)[-1]} value, which no config key takes", node.start_mark)
    for tag in ("binary", "set", "omap", "pairs"):
        Loader.add_constructor(f"tag:yaml.org,2002:{tag}", _refused)
    _LOADER = Loader
    return Loader


def load_yaml_text(text: str, where: str):
    """The value of the YAML document ``text`` (safe tags only), read within :data:`YAML_LIMITS`.

    DncsimError ``"<where>: ..."`` for a limit or a value that does not fit its tag (``!!int abc``);
    ``yaml.YAMLError`` for text that is not YAML (the caller names it)."""
    import yaml
    if len(text) > YAML_LIMITS["chars"]:
        raise DncsimError(f"{where}: YAML of {len(text)} characters (at most {YAML_LIMITS['chars']})")
    loader = _limited_loader()(text)
    try:
        return loader.get_single_data()
    except _YamlLimit as exc:
        raise DncsimError(f"{where}: YAML {exc.problem}{_at(exc.mark)}") from None
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise DncsimError(f"{where}: a YAML value does not fit its tag ({type(exc).__name__}: {exc})") from None
    finally:
        loader.dispose()


def read_yaml(path) -> dict:
    """Read a YAML mapping from ``path`` within :data:`YAML_LIMITS`; DncsimError naming the file when
    missing, too large, invalid or not a mapping."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise DncsimError(f"{p}: no such file")
    try:
        if p.stat().st_size > 4 * YAML_LIMITS["chars"]:
            raise DncsimError(f"{p}: {p.stat().st_size} bytes; a YAML file may have at most "
                              f"{YAML_LIMITS['chars']} characters")
        data = load_yaml_text(p.read_text(encoding="utf-8"), str(p))
    except UnicodeDecodeError:
        raise DncsimError(f"{p}: not a text file (expected UTF-8 YAML)") from None
    except OSError as exc:
        raise DncsimError(f"{p}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DncsimError(f"{p}: not valid YAML{_at(mark)}: {problem}") from None
    if not isinstance(data, dict):
        raise DncsimError(f"{p}: expected a YAML mapping at the top level")
    return data


# --- messages -----------------------------------------------------------------------------------------

#: the most characters of a printed error message; the rest is cut, saying how much
MESSAGE_LIMIT = 2000

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str, limit: Optional[int] = MESSAGE_LIMIT) -> str:
    """``text`` as one printable line: control characters (C0, DEL, C1 such as CSI), line and paragraph
    separators, bidirectional overrides and lone surrogates escaped as ``repr`` writes them (``\\x1b``, ``\\u202e``), so
    that a message quoting what a user wrote can neither break the line nor drive the terminal; cut to
    ``limit`` characters (None: no cut), saying how many more there were."""
    text = _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], str(text))
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return text


# --- CSV ----------------------------------------------------------------------------------------------

def csv_text(header: Sequence[str], rows) -> str:
    """A table as CSV text: ``header``, then one line per row (a sequence of values in header order);
    None becomes an empty field, a float its ``repr`` (exact round trip). RFC 4180 line ends (CRLF), so
    the csv module quotes every field holding a comma, quote, CR or LF (with LF line ends it leaves a
    lone CR unquoted, which breaks the row)."""
    return "".join(csv_lines([header])) + "".join(csv_lines(rows))


def csv_lines(rows) -> List[str]:
    """The CSV lines of ``rows`` as :func:`csv_text` writes them (each with its CRLF), one string per row,
    from one writer."""
    buf = io.StringIO()
    w = csv.writer(buf)
    ends = []
    for row in rows:
        w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row])
        ends.append(buf.tell())
    text = buf.getvalue()
    return [text[a:b] for a, b in zip([0] + ends[:-1], ends)]


# --- JSON ---------------------------------------------------------------------------------------------

#: the key :func:`json_text` adds to a mapping that held non-finite numbers
NON_FINITE = "non_finite"


def finite_json(obj, _path: str = "", _found: Optional[List[str]] = None):
    """``(copy, paths)``: ``obj`` (dicts, lists, tuples, scalars) with every NaN or infinite float
    (numpy's included) replaced by None, and the dotted paths (``pairs[0].tightness``) of those replaced."""
    found = [] if _found is None else _found
    if isinstance(obj, dict):
        out = {k: finite_json(v, f"{_path}.{k}" if _path else str(k), found)[0] for k, v in obj.items()}
    elif isinstance(obj, (list, tuple)):
        out = [finite_json(v, f"{_path}[{i}]", found)[0] for i, v in enumerate(obj)]
    elif isinstance(obj, float) or type(obj).__module__ == "numpy" and hasattr(obj, "item"):
        out = obj.item() if hasattr(obj, "item") else obj
        if isinstance(out, float) and not math.isfinite(out):
            found.append(_path or "(value)")
            out = None
    else:
        out = obj
    return out, found


def json_text(obj, *, indent: Optional[int] = 2) -> str:
    """The one JSON encoder of everything dncsim writes: strict JSON (no NaN/Infinity tokens, which most
    readers reject), newline-terminated. A non-finite number is written as null; a mapping at the top
    level then gets ``non_finite``: ``{"note", "count", "paths"}`` (the first 100 paths) saying so."""
    clean, paths = finite_json(obj)
    if paths and isinstance(clean, dict):
        clean[NON_FINITE] = {"note": "NaN or infinite values written as null", "count": len(paths),
                             "paths": paths[:100]}
    return json.dumps(clean, indent=indent, allow_nan=False) + "\n"


# --- atomic writes ------------------------------------------------------------------------------------

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"))


def not_a_regular_file(path) -> Optional[str]:
    """What is at ``path`` when it is neither nothing nor a regular file ("a symbolic link", "a
    directory", "a character device", ...; a link is not followed), else None."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _refuse_non_regular(path: Path) -> None:
    kind = not_a_regular_file(path)
    if kind is not None:
        raise WriteFailed(f"{path}: is {kind}, not a regular file; not replaced (dncsim writes only regular files)",
                          {"path": str(path), "kind": kind})


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a same-directory temporary file, fsynced, then
    ``os.replace``; the file gets the usual permissions (0666 minus the umask). Only a regular file
    is replaced (or a new one created): anything else at ``path`` (a symbolic link, directory,
    device, FIFO, socket) is a WriteFailed line and stays as it was."""
    path = Path(path)
    _refuse_non_regular(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~_umask())          # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _refuse_non_regular(path)                 # again: something may have appeared while writing
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise WriteFailed(f"{path}: cannot write ({exc.strerror or exc}); the previous file, if any, is intact",
                          {"path": str(path), "errno": exc.errno}) from None
    except BaseException:
        _remove(tmp)
        raise


def is_atomic_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_write_bytes`'s temporary files (``.<name>.<random>.tmp``):
    one left behind is a write that a killed process never finished, never a result."""
    return name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3


def _remove(tmp) -> None:
    try:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    except OSError:
        pass


def atomic_write_text(path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    """Write ``obj`` as :func:`json_text` (strict JSON, non-finite numbers as null with a note) to ``path``
    atomically."""
    atomic_write_text(path, json_text(obj))


#: output paths that mean standard output
STDOUT_NAMES = ("-", "/dev/stdout")


def output_file(value, flag: str) -> Optional[Path]:
    """The output file a user named with ``flag`` (e.g. ``--json``): None for standard output (``-`` or
    ``/dev/stdout``), else the path. A DncsimError line when the path is empty, is anything but a
    regular file or nothing (a symbolic link, directory, device, FIFO, socket), or its directory does
    not exist."""
    text = os.fspath(value)
    if text in STDOUT_NAMES:
        return None
    if not text.strip():
        raise DncsimError(f"{flag}: an empty path; give a file path (or - for standard output)")
    path = Path(text)
    kind = not_a_regular_file(path)
    if kind is not None:
        raise DncsimError(f"{flag}: {path} is {kind}, not a regular file; give a file path (or - for standard "
                          f"output)")
    if not path.resolve().parent.is_dir():
        raise DncsimError(f"{flag}: directory {path.resolve().parent} does not exist")
    return path


def lazy_import(namespace: dict, where: dict, name: str):
    """The body of a package's module-level ``__getattr__`` (PEP 562): import ``name`` from the module
    ``where[name]`` on first use and cache it in the package's ``namespace`` (its ``globals()``), so
    that importing the package imports none of its heavy modules; AttributeError for other names."""
    if name not in where:
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
    from importlib import import_module
    value = getattr(import_module(where[name]), name)
    namespace[name] = value
    return value
