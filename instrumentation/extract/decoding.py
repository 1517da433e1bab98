"""Lenient JSON decoding into narrow msgspec Structs.

Bodies that are not JSON objects decode to None. A body that is mostly right
but has a field of an unexpected type (a provider extension, a client bug)
decodes with that field left at its default, so one odd field never costs
the other facts. The strict decode is tried first: the salvage path only runs
for bodies that failed it.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any, TypeVar, Union, get_args, get_origin

import msgspec

S = TypeVar("S", bound=msgspec.Struct)
_MISSING = object()


@functools.cache
def _decoder(target: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(target)


def decode(data: bytes | str | msgspec.Raw, cls: type[S]) -> S | None:
    """`data` as `cls`, salvaging well-typed fields when some are not; None if not an object."""
    return lenient(cls)(data)


@functools.cache
def lenient(cls: type[S]) -> Callable[[bytes | str | msgspec.Raw], S | None]:
    """`decode` for one `cls`, its decoder bound once: for a stream's events, where
    looking the decoder up again showed per event."""
    strict = msgspec.json.Decoder(cls).decode

    def decode_as(data: bytes | str | msgspec.Raw) -> S | None:
        try:
            return strict(data)
        except msgspec.ValidationError:
            return _salvage(data, cls)
        except msgspec.DecodeError:
            return None

    return decode_as


def _salvage(data: bytes | str | msgspec.Raw, cls: type[S]) -> S | None:
    try:
        members: dict[str, msgspec.Raw] = _decoder(dict[str, msgspec.Raw]).decode(data)
    except msgspec.DecodeError:
        return None
    kwargs: dict[str, Any] = {}
    for info in msgspec.structs.fields(cls):
        raw = members.get(info.encode_name)
        if raw is not None:
            value = _field(raw, info.type)
            if value is not _MISSING:
                kwargs[info.name] = value
    return cls(**kwargs)


def _field(raw: msgspec.Raw, target: Any) -> Any:
    try:
        return _decoder(target).decode(raw)
    except msgspec.DecodeError:
        pass
    # Only nested Structs (or lists of them) can be partly right; a wrong
    # scalar is simply dropped.
    for option in _options(target):
        if _is_struct(option):
            nested = _salvage(raw, option)
            if nested is not None:
                return nested
        elif get_origin(option) is list and _is_struct(get_args(option)[0]):
            return _salvage_list(raw, get_args(option)[0])
    return _MISSING


def _salvage_list(raw: msgspec.Raw, cls: type[S]) -> list[S] | object:
    try:
        items: list[msgspec.Raw] = _decoder(list[msgspec.Raw]).decode(raw)
    except msgspec.DecodeError:
        return _MISSING
    decoded = (decode(item, cls) for item in items)
    return [item for item in decoded if item is not None]


def _options(target: Any) -> tuple[Any, ...]:
    if get_origin(target) in (Union, types.UnionType):
        return get_args(target)
    return (target,)


def _is_struct(target: Any) -> bool:
    return isinstance(target, type) and issubclass(target, msgspec.Struct)
