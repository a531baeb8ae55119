"""Registries of the run's pluggable parts: one per kind (objective, strategy, regulariser).

A part is a config class (a :class:`~dncsim.common.StrictModel` with a ``name: Literal[...]`` tag) whose
``builder: ClassVar[str]`` names the code that builds it as ``"module:function"``, imported only when
a run is built (validating a config imports neither torch nor Avalanche). ``@REGISTRY.register`` adds
the class; the config union (``REGISTRY.union()``) and the names (``REGISTRY.names``) derive from the
registry, and ``REGISTRY.build(cfg, ...)`` calls the builder of ``cfg``'s class. A class registered
after the run config was defined (a plugin module, a test) is added to the config models that hold
the union (``bind``), which are rebuilt.
"""
from __future__ import annotations

import contextlib
import importlib
import typing
from typing import Annotated, Any, Callable, Dict, List, Literal, Tuple, Union

from pydantic import BaseModel, Field

__all__ = ["Registry", "OBJECTIVES_REGISTRY", "STRATEGIES_REGISTRY", "REGULARIZERS_REGISTRY"]


def _names(cls: type) -> Tuple[str, ...]:
    annotation = cls.model_fields["name"].annotation if "name" in cls.model_fields else None
    if typing.get_origin(annotation) is not Literal:
        raise TypeError(f"{cls.__name__}: a registered config needs a field name: Literal['...']")
    return tuple(typing.get_args(annotation))


class Registry:
    """Config classes of one kind of part, in registration order (see the module docstring)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: List[type] = []
        self._by_name: Dict[str, type] = {}
        self._bound: List[Tuple[type, str, Callable[[Any], Any]]] = []

    def register(self, cls: type) -> type:
        """Add config class ``cls`` (usable as a class decorator); its names must be new."""
        builder = getattr(cls, "builder", None)
        if not isinstance(builder, str) or builder.count(":") != 1:
            raise TypeError(f"{cls.__name__}: a {self.kind} config names its builder as "
                            "builder: ClassVar[str] = 'module:function'")
        names = _names(cls)
        taken = [n for n in names if n in self._by_name]
        if taken:
            raise ValueError(f"{self.kind} {taken[0]!r} is already registered ({self._by_name[taken[0]].__name__})")
        self._classes.append(cls)
        self._by_name.update({n: cls for n in names})
        if self._bound:
            _rebuild_bound()
        return cls

    def unregister(self, cls: type) -> None:
        """Remove config class ``cls`` (the bound models are rebuilt without it)."""
        self._classes.remove(cls)
        self._by_name = {n: c for n, c in self._by_name.items() if c is not cls}
        if self._bound:
            _rebuild_bound()

    @contextlib.contextmanager
    def registered(self, cls: type):
        """``with REGISTRY.registered(cls):`` ``cls`` is registered inside the block only (tests, sessions)."""
        self.register(cls)
        try:
            yield cls
        finally:
            self.unregister(cls)

    @property
    def names(self) -> Tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._by_name)

    @property
    def classes(self) -> Tuple[type, ...]:
        return tuple(self._classes)

    def config_class(self, name: str) -> type:
        return self._by_name[name]

    def members(self):
        """The union of the registered classes (a single class when only one is registered)."""
        return Union[tuple(self._classes)]

    def union(self):
        """The config union, discriminated by ``name``, for a field's annotation."""
        return Annotated[self.members(), Field(discriminator="name")]

    def bind(self, model: type, field: str, wrap: Callable[[Any], Any] = lambda u: u) -> None:
        """Record that ``model.field`` holds ``wrap(union)``, to be rebuilt when a class registers later."""
        self._bound.append((model, field, wrap))

    def builder(self, cfg: BaseModel) -> Callable:
        """The function named by ``type(cfg).builder``, imported now."""
        module, _, attr = type(cfg).builder.partition(":")
        return getattr(importlib.import_module(module), attr)

    def build(self, cfg: BaseModel, *args, **kwargs):
        """``builder(cfg, *args, **kwargs)`` for ``cfg``'s class."""
        return self.builder(cfg)(cfg, *args, **kwargs)


OBJECTIVES_REGISTRY = Registry("objective")
STRATEGIES_REGISTRY = Registry("strategy")
REGULARIZERS_REGISTRY = Registry("regularizer")
_ALL = (REGULARIZERS_REGISTRY, OBJECTIVES_REGISTRY, STRATEGIES_REGISTRY)     # inner parts first


def _rebuild_bound() -> None:
    """Give every bound field the current union and rebuild its model, inner parts before the models
    that hold them (regularisers live in objectives, objectives and strategies in the run config)."""
    rebuilt: List[type] = []
    for registry in _ALL:
        for model, field, wrap in registry._bound:
            model.model_fields[field].annotation = wrap(registry.members())
            if model not in rebuilt:
                rebuilt.append(model)
    for model in rebuilt:
        model.model_rebuild(force=True)

