"""The registries of data sources and stream types: name -> config class, each class naming its builder.

A source config class sets ``loader``, a stream config class ``builder``: a callable or a lazy
``"module:function"`` path (so that configs stay torch-free). Registering it (``@register_source`` /
``@register_stream``, or a plain call) adds its ``name`` (``type``) to the scenario config's union and
to the one-line error that lists the known names. Loaders are ``(cfg, seed) -> SourceData``;
builders ``(cfg, source, seed) -> Scenario``.
"""
from __future__ import annotations

import typing
from importlib import import_module
from typing import Callable, Dict, List, Union

from dncsim.common import StrictModel

__all__ = ["Registry", "SOURCES", "STREAMS", "register_source", "register_stream"]


class Registry:
    """Config classes of one kind of part, keyed by the single ``Literal`` value of their ``key`` field
    (``name``, ``type``), in registration order; ``attr`` is the class attribute naming the builder."""

    def __init__(self, kind: str, key: str, attr: str):
        self.kind, self.key, self.attr = kind, key, attr
        self._classes: Dict[str, type] = {}
        self._listeners: List[Callable[[], None]] = []

    def tag(self, cls: type) -> str:
        field = cls.model_fields.get(self.key)
        args = typing.get_args(field.annotation) if field is not None else ()
        if field is None or typing.get_origin(field.annotation) is not typing.Literal or len(args) != 1:
            raise TypeError(f"{cls.__name__}: a {self.kind} config needs a field {self.key}: Literal['...'] "
                            f"with one value")
        return str(args[0])

    def register(self, cls: type) -> type:
        """Add ``cls`` (replacing a class of the same name); returns it, so it serves as a decorator."""
        target = getattr(cls, self.attr, None)
        if not (isinstance(target, str) or callable(target)):
            raise TypeError(f"{cls.__name__}: a {self.kind} config names its builder in {self.attr} "
                            f"('module:function' or a callable)")
        self._classes[self.tag(cls)] = cls
        self._changed()
        return cls

    def unregister(self, name: str) -> None:
        del self._classes[name]
        self._changed()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every later (un)registration (the scenario config rebuilds its union)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def names(self) -> List[str]:
        return list(self._classes)

    def classes(self) -> List[type]:
        return list(self._classes.values())

    def union(self):
        """``Union`` of the registered classes (the field's ``discriminator`` is ``key``)."""
        return Union[tuple(self._classes.values())]

    def builder(self, cfg) -> Callable:
        """The function ``cfg``'s class names, imported on first use."""
        target = getattr(type(cfg), self.attr)
        if callable(target):
            return target
        module, _, name = target.partition(":")
        return getattr(import_module(module), name)


SOURCES = Registry("source", "name", "loader")
STREAMS = Registry("stream", "type", "builder")
register_source = SOURCES.register
register_stream = STREAMS.register


def rebuild_dependents(models: List[type]) -> None:
    """Rebuild ``models`` (their field annotations already updated), then every StrictModel that holds
    one of them, transitively, each after the sections it holds: pydantic copies a section's schema
    into every model that embeds it."""
    from dncsim.common import model_classes
    held = {m: {c for f in m.model_fields.values() for c in model_classes(f.annotation)} - {m}
            for m in _subclasses(StrictModel)}
    stale = list(models)
    for m in stale:
        stale += [d for d, h in held.items() if m in h and d not in stale]
    while stale:
        m = next((m for m in stale if not held.get(m, set()) & set(stale)), stale[0])
        m.model_rebuild(force=True)
        stale.remove(m)


def _subclasses(cls: type) -> List[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out
