"""FHIR input models (slotted pydantic dataclasses) validated the way the service reads them."""

from typing import Any, TypeVar

from pydantic import TypeAdapter

T = TypeVar("T")


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def validated(model: type[T], value: Any) -> T:
    """`value` read as `model` (pydantic's ValidationError when it is not one)."""
    if model not in _ADAPTERS:
        _ADAPTERS[model] = TypeAdapter(model)
    result: T = _ADAPTERS[model].validate_python(value)
    return result
