"""A faster ``__init__`` for the frozen, slotted dataclasses made on every decided
segment (the controller's inputs, decision and state, a session's changes).

A frozen dataclass's ``__init__`` sets each field with ``object.__setattr__``,
which finds the slot's descriptor by name at every call; :func:`fast_init`
writes the same ``__init__`` (same parameters, same defaults) calling each
slot's descriptor directly, at about half the cost.  Only for a class whose
fields are all plain ``__init__`` parameters with no default factory, and
with no ``__post_init__``: anything else is refused at import time.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Give the frozen, slotted dataclass ``cls`` a faster, equivalent ``__init__``."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or not hasattr(cls, "__slots__"):
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    scope: dict[str, object] = {}
    parameters: list[str] = []
    for field in fields:
        if not field.init or field.kw_only or field.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{field.name} is not a plain parameter")
        scope[f"_set_{field.name}"] = getattr(cls, field.name).__set__
        if field.default is dataclasses.MISSING:
            parameters.append(field.name)
        else:
            scope[f"_default_{field.name}"] = field.default
            parameters.append(f"{field.name}=_default_{field.name}")
    lines = [f"def __init__(self, {', '.join(parameters)}):"]
    lines += [f"    _set_{field.name}(self, {field.name})" for field in fields]
    exec("\n".join(lines) if fields else "def __init__(self):\n    pass", scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # type: ignore[attr-defined]
    type.__setattr__(cls, "__init__", init)
    return cls
