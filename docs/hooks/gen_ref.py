"""Generated reference pages: the configuration schema and the command line.

An MkDocs hook (``hooks:`` in mkdocs.yml): at build time it writes ``reference/configuration.md``
from the pydantic schema (``RunConfig``, ``StudyConfig``) and ``reference/cli.md`` from the argparse
parsers of ``dncsim.simulator.cli``, so neither can drift from the code. The page builders are
plain functions, also used by ``tests/test_docs.py``.
"""
from __future__ import annotations

import argparse
import enum
import typing
from pathlib import Path
from typing import Iterator, List, Tuple

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

DISCRIMINATORS = ("name", "type", "kind")
ROOT = Path(__file__).resolve().parents[2]
API_TREE = ROOT / "build" / "docs-api"           # mkdocs.yml: mkdocstrings' python handler reads it


def stage_api_tree() -> Path:
    """The package laid out as it installs (``dncsim/analysis`` ...), as symbolic links into the checkout.

    setup.cfg maps ``dncsim.analysis`` to ``analysis/`` and so on; the docstring collector (griffe) reads
    source folders by module path, so it gets this tree, whatever way dncsim is installed.
    """
    pkg = API_TREE / "dncsim"
    pkg.mkdir(parents=True, exist_ok=True)
    links = {p.name: p for p in (ROOT / "src" / "dncsim").iterdir()
             if p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").is_file())}
    links.update({name: ROOT / name for name in ("analysis", "scenarios", "simulator")})
    for stale in [p for p in pkg.iterdir() if p.name not in links and (p.is_symlink() or p.is_file())]:
        stale.unlink()                                                   # a module that has since moved
    for name, target in links.items():
        link = pkg / name
        if not (link.is_symlink() and link.resolve() == target.resolve()):
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target)
    return API_TREE


stage_api_tree()


def _type_name(annotation) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [a for a in args if a is not type(None)]
        forms = [_variant(a) for a in parts if isinstance(a, type) and issubclass(a, BaseModel)]
        if forms and all(k for k, _ in forms) and len(forms) == len(parts):
            return f"section, by {forms[0][0]}: " + ", ".join(v for _, v in forms)
        inner = " | ".join(_type_name(a) for a in parts)
        return f"{inner} or null" if len(parts) < len(args) else inner
    if origin in (list, List, typing.Sequence, tuple):
        return "list[" + ", ".join(_type_name(a) for a in args if a is not Ellipsis) + "]"
    if origin is dict:
        return "mapping[" + ", ".join(_type_name(a) for a in args) + "]"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "section"
        if issubclass(annotation, enum.Enum):
            return "one of " + ", ".join(repr(m.value) for m in annotation)
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _literal_values(annotation) -> List[str]:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    if origin is typing.Annotated:
        return _literal_values(typing.get_args(annotation)[0])
    out: List[str] = []
    for a in typing.get_args(annotation) if origin is not None else ():
        out += [v for v in _literal_values(a) if v not in out]
    return out


def _bounds(field) -> str:
    out = []
    for m in field.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥"),
                          ("max_length", "length ≤")):
            v = getattr(m, attr, None)
            if v is not None:
                out.append(f"{sym} {v}")
    return ", ".join(out)


def _default(field) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "computed"
    else:
        value = field.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        key, form = _variant(type(value))
        return f"{key}: {form}" if key else "its keys' defaults"
    if isinstance(value, enum.Enum):
        value = value.value
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _variant(model) -> Tuple[str, str]:
    """(discriminator key, value) of a union member, or ('', '')."""
    for key in DISCRIMINATORS:
        f = model.model_fields.get(key)
        if f is not None and typing.get_origin(f.annotation) is typing.Literal:
            return key, " / ".join(str(a) for a in typing.get_args(f.annotation))
    return "", ""


def walk(model, prefix: str = "") -> Iterator[Tuple[str, type, List[tuple]]]:
    """Every section of the schema: (dotted path, model, [(key, field, sub-models)])."""
    rows = []
    subs = []
    for name, field in model.model_fields.items():
        children = [m for m in _model_classes(field.annotation)]
        rows.append((name, field, children))
        for child in children:
            subs.append((f"{prefix}.{name}" if prefix else name, child))
    yield prefix, model, rows
    for path, child in subs:
        yield from walk(child, path)


def _model_classes(annotation):
    from dncsim.common import model_classes
    return model_classes(annotation)


def field_description(name: str, field, model) -> str:
    if field.description:
        return field.description
    key, value = _variant(model)
    if name == key:
        return f"selects this variant ({key}: {value})"
    return ""


def configuration_page() -> str:
    from dncsim.simulator.config import RunConfig
    from dncsim.simulator.study import StudyConfig
    out = ["# Configuration reference", "",
           "Generated at build time from the pydantic schema (`dncsim.simulator.config.RunConfig` and "
           "`dncsim.simulator.study.StudyConfig`); the text of each key is its field's description. "
           "A section that can take several forms (a `name`, `type` or `kind` key selects one) is listed "
           "once per form. Any key can be set from the command line with `--set KEY.PATH=VALUE` "
           "(the value read as YAML). Relative paths are resolved against the current directory. Unknown keys, "
           "wrong types and out-of-range values stop with one line naming the key, with a did-you-mean "
           "(`scenario.source: unknown key 'colour' (did you mean 'colors'?); accepted keys: ...`), and exit "
           "status 2.", ""]
    for title, root, intro in (("Run configuration", RunConfig, "The YAML file of `dncsim run`."),
                               ("Study configuration", StudyConfig, "The YAML file of `dncsim study`.")):
        out += [f"## {title}", "", intro, ""]
        seen = set()
        for path, model, rows in walk(root):
            if (path, model) in seen:
                continue
            seen.add((path, model))
            key, value = _variant(model)
            heading = f"`{path}`" if path else "top level"
            if key:
                heading += f" ({key}: `{value}`)"
            out += [f"### {heading}", ""]
            doc = (model.__doc__ or "").strip()
            if doc and not doc.startswith(model.__name__ + "("):
                out += [doc, ""]
            out += ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
            for name, field, children in rows:
                full = f"{path}.{name}" if path else name
                allowed = ", ".join(f"`{v}`" for v in _literal_values(field.annotation)) or _bounds(field)
                out.append(f"| `{full}` | {_cell(_type_name(field.annotation))} | `{_cell(_default(field))}` | "
                           f"{_cell(allowed)} | {_cell(field_description(name, field, model))} |")
            out.append("")
    return "\n".join(out) + "\n"


def _subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def cli_page() -> str:
    from dncsim.simulator.cli import build_parser
    parser = build_parser()
    out = ["# Command-line reference", "",
           "Generated at build time from the argparse parsers of `dncsim.simulator.cli`. "
           "Exit status: 0 success, 2 a usage or configuration error, 1 a runtime or I/O failure.", ""]
    for name, sub in _subparsers(parser).items():
        sub.prog = f"dncsim {name}"
        out += [f"## `dncsim {name}`", "", (sub.description or "").strip(), "",
                "```text", sub.format_usage().strip().removeprefix("usage: "), "```", "",
                "| argument | default | description |", "|---|---|---|"]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = ", ".join(action.option_strings) or action.metavar or action.dest
            default = ("" if action.default is None or action.default is False or action.default == argparse.SUPPRESS
                       else f"`{action.default}`")
            if action.choices:
                help_ = f"{action.help or ''} (one of {', '.join(map(str, action.choices))})"
            else:
                help_ = action.help or ""
            out.append(f"| `{flag}` | {default} | {_cell(help_)} |")
        out.append("")
    return "\n".join(out) + "\n"


def api_page() -> str:
    import dncsim
    out = ["# Python API", "",
           "Generated at build time from the docstrings: every name of `dncsim.__all__`, importable from "
           "`dncsim` itself (`dncsim.class_geometry`, `dncsim.run`, ...), documented where it is defined. "
           "The [extension points](../architecture.md#extending-dncsim) follow.", ""]
    by_module = {}
    for name in dncsim.__all__:
        if name in dncsim._WHERE:
            module = getattr(getattr(dncsim, name), "__module__", dncsim._WHERE[name])
            by_module.setdefault(module, []).append(name)
    for module, names in by_module.items():
        out += [f"## `{module}`", ""]
        for name in names:
            out += [f"::: {module}.{name}", "    options:", "      heading_level: 3", ""]
    out += ["## Extension points", ""]
    for target in EXTENSION_POINTS:
        out += [f"::: {target}", "    options:", "      heading_level: 3", ""]
    return "\n".join(out) + "\n"


EXTENSION_POINTS = ("dncsim.analysis.metrics.base.Metric", "dncsim.simulator.objectives.Objective",
                    "dncsim.scenarios.sources.SourceData")

PAGES = {"reference/api.md": api_page, "reference/configuration.md": configuration_page, "reference/cli.md": cli_page}


def on_files(files, config):
    """MkDocs hook: add the generated pages to the build."""
    from mkdocs.structure.files import File
    for uri, build in PAGES.items():
        files.append(File.generated(config, uri, content=build()))
    return files


if __name__ == "__main__":                   # write the pages to a folder, for a look without mkdocs
    import sys
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "site-ref")
    for uri, build in PAGES.items():
        (target / uri).parent.mkdir(parents=True, exist_ok=True)
        (target / uri).write_text(build())
