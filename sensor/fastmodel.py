"""Building the per-event schema models without validating them again.

Why: a handshake event is ~13 small pydantic models made afresh for every handshake
(``event``, ``source``, ``destination``, ``network``, ``tls``, timing, counters...). Their
validation was a third of the cost of building an event, and it checks nothing the builder
has not already guaranteed: every value comes from the sensor's own parsed records, with the
field's exact type (ints from ``struct``, names from the registry, ``datetime`` from
``sensor.build.utc``). ``BaseModel.model_construct`` skips validation but is slower than
validating these small models (it walks every field in Python), so :func:`make` fills the
instance's ``__dict__`` from a precomputed table of defaults instead. A default made by a
factory is made afresh per instance, as validation does, except an immutable one (a frozen
model of plain immutable defaults, such as ``Ecs``), which is made once and shared.

:func:`maker` goes one step further for the models made once per event: a constructor
generated for one class and one list of field names, taking the values positionally.

The result is the same object validation gives: equal (``==``), same ``model_fields_set``,
same JSON. ``tests/sensor/test_fastmodel.py`` builds the events of every test capture both
ways (:data:`CHECKED`) and compares them field by field, including each value's type.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

#: When true, :func:`make` validates like ``cls(**values)`` (the equivalence tests set it).
CHECKED = False

_set = object.__setattr__
#: Per model class: (every field in declaration order, with its default or None for a
#: required field or one with a factory; the fields that have a factory).
_Template = tuple[dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...]]
_TEMPLATES: dict[type[BaseModel], _Template] = {}


_IMMUTABLE = (str, int, float, bool, type(None), tuple, frozenset)


def _constant(factory: Callable[[], Any]) -> BaseModel | None:
    """One instance of ``factory`` that every model may share, or None: a frozen model
    class whose fields all have immutable plain defaults (``Ecs``, ``FlowCounters``) makes
    the same immutable value every time, so it is made once instead of once per event."""
    if not (isinstance(factory, type) and issubclass(factory, BaseModel)
            and factory.model_config.get("frozen")):
        return None
    for info in factory.model_fields.values():
        if info.is_required() or info.default_factory is not None:
            return None
        if not isinstance(info.default, _IMMUTABLE):
            return None
    return factory()


def _template(cls: type[BaseModel]) -> _Template:
    # Declaration order, as validation fills ``__dict__`` (repr and iteration follow it).
    fields: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    for name, info in cls.model_fields.items():
        fields[name] = None if info.is_required() or info.default_factory else info.default
        if info.default_factory is not None:
            shared = _constant(info.default_factory)  # type: ignore[arg-type]
            if shared is not None:
                fields[name] = shared
                continue
            # A fresh (mutable) default per instance, as validation makes.
            factories.append((name, info.default_factory))  # type: ignore[arg-type]
    entry = (fields, tuple(factories))
    _TEMPLATES[cls] = entry
    return entry


def make(cls: type[M], **values: Any) -> M:
    """``cls(**values)`` without validation, for values the caller guarantees are of the
    field's type and within its constraints. ``values`` are keyed by field name (not alias)
    and must name every required field; unknown names are not checked (``extra="forbid"``
    is the validated path's job: the equivalence tests run it). Models with validators or
    private attributes must not be made this way."""
    if CHECKED:
        return cls(**values)
    entry = _TEMPLATES.get(cls)
    if entry is None:
        entry = _template(cls)
    template, factories = entry
    fields = template.copy()
    for name, factory in factories:
        if name not in values:
            fields[name] = factory()
    fields.update(values)  # existing keys: declaration order is kept
    model = cls.__new__(cls)
    _set(model, "__dict__", fields)
    _set(model, "__pydantic_fields_set__", set(values))
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


# The slots every pydantic model instance has, set through their descriptors (one C call
# each, no attribute-name lookup): what ``make`` does with ``object.__setattr__``.
_SLOTS: dict[str, Any] = {name: vars(BaseModel)[name] for name in (
    "__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__")}
_set_dict = _SLOTS["__dict__"].__set__
_set_fields_set = _SLOTS["__pydantic_fields_set__"].__set__
_set_extra = _SLOTS["__pydantic_extra__"].__set__
_set_private = _SLOTS["__pydantic_private__"].__set__


def maker(cls: type[M], *names: str) -> Callable[..., M]:
    """A constructor of ``cls`` taking the values of ``names``, positionally in that order:
    ``maker(Endpoint, "ip", "port")("192.0.2.1", 443)`` is ``make(Endpoint, ip=..., port=...)``
    (same contract: the caller guarantees each value's type and constraints), at about a
    third of its cost, for the few models made once per event (``sensor.build``).

    Why generated code: the instance's ``__dict__`` must list every field in declaration
    order (as validation fills it) with the given values in place; a dict display written
    out once per (class, names) builds it in one step, where ``make`` copies a template,
    walks the factories and updates it per call. ``CHECKED`` is read at each call."""
    template, factories = _TEMPLATES.get(cls) or _template(cls)
    unknown = set(names) - set(template)
    if unknown or len(set(names)) != len(names):
        raise TypeError(f"{cls.__name__}: bad field names {sorted(unknown) or names}")
    made = dict(factories)
    env: dict[str, Any] = {"cls": cls, "new": object.__new__, "set_dict": _set_dict,
                           "set_fields_set": _set_fields_set, "set_extra": _set_extra,
                           "set_private": _set_private, "fastmodel": sys.modules[__name__]}
    items = []
    for index, name in enumerate(template):
        if name in names:
            value = f"a{names.index(name)}"
        elif name in made:
            env[f"f{index}"] = made[name]
            value = f"f{index}()"
        else:
            env[f"d{index}"] = template[name]
            value = f"d{index}"
        items.append(f"{name!r}: {value}")
    args = ", ".join(f"a{i}" for i in range(len(names)))
    keywords = "{" + ", ".join(f"{name!r}: a{i}" for i, name in enumerate(names)) + "}"
    fields_set = "{" + ", ".join(map(repr, names)) + "}" if names else "set()"
    source = (
        f"def make_{cls.__name__}({args}):\n"
        f"    if fastmodel.CHECKED:\n"
        f"        return cls(**{keywords})\n"
        f"    model = new(cls)\n"
        f"    set_dict(model, {{{', '.join(items)}}})\n"
        f"    set_fields_set(model, {fields_set})\n"
        f"    set_extra(model, None)\n"
        f"    set_private(model, None)\n"
        f"    return model\n"
    )
    exec(source, env)  # our own text, built from the model's field names
    function: Callable[..., M] = env[f"make_{cls.__name__}"]
    return function
