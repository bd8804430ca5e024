"""Hypothesis strategies for hostile request bodies, derived from the contract's descriptors.

Everything is found by walking descriptors: the RPCs of every ``groundwire.v1`` service, the
fields of their request messages, which of those are strings, repeated or maps. A field or
RPC added to the protos is fuzzed without touching this module.

A body is the bytes a client puts on the wire: random bytes; a valid message with extreme
values (integer bounds, NaN and infinities, empty and long strings, unknown enum numbers);
such a message truncated or with bytes flipped; one with a string field holding bytes that
are not UTF-8; one with a repeated field thousands long; deeply nested unknown groups.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

import groundwire.v1

F = FieldDescriptor
MAX_DEPTH = 4
# Stands in for a string while the message is serialized; swapped for invalid UTF-8 after.
PLACEHOLDER = b"PLACEHOLDER!"
NOT_UTF8 = (
    b"\xc3\x28" * 6,  # a lead byte without its continuation
    b"\xed\xa0\x80" * 4,  # an encoded UTF-16 surrogate
    b"\xc0\xaf" * 6,  # an overlong encoding of "/"
    b"\xff" * 12,  # bytes that never occur in UTF-8
)

_INT_BOUNDS = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_ENUM: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
_STRINGS = st.one_of(
    st.text(max_size=24),
    st.sampled_from(["", " ", "\x00", "q", "lang", "en", "doc-1", "x" * 5000, "é🙂" * 300]),
)


@dataclass(frozen=True)
class Rpc:
    """One method of the contract, as the wire sees it."""

    path: str  # /groundwire.v1.Service/Method
    request: Descriptor
    client_streaming: bool
    server_streaming: bool


def contract_rpcs() -> list[Rpc]:
    """Every RPC of every service in the ``groundwire.v1`` package."""
    rpcs: list[Rpc] = []
    for module_info in pkgutil.iter_modules(groundwire.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"groundwire.v1.{module_info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                rpcs.append(
                    Rpc(
                        f"/{service.full_name}/{method.name}",
                        method.input_type,
                        method.client_streaming,
                        method.server_streaming,
                    )
                )
    return sorted(rpcs, key=lambda rpc: rpc.path)


def message_class(descriptor: Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_BOUNDS:
        low, high = _INT_BOUNDS[kind]
        edges = [low, high, 0, 1, high - 1, low + 1] + ([-1] if low < 0 else [])
        if kind == F.TYPE_ENUM:
            edges += [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(edges), st.integers(low, high))
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        width = 64 if kind == F.TYPE_DOUBLE else 32
        edges = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0]
        return st.one_of(st.sampled_from(edges), st.floats(width=width))
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind == F.TYPE_STRING:
        return _STRINGS
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=32)
    raise AssertionError(f"unhandled field type {kind} of {field.full_name}")


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type in (F.TYPE_MESSAGE, F.TYPE_GROUP):
        return messages(field.message_type, depth + 1)
    return _scalar(field)


def _assign(message: Message, field: FieldDescriptor, value: Any) -> None:
    """``message.field = value`` for any kind of field (maps take a dict, repeated a list)."""
    target = getattr(message, field.name)
    if _is_map(field):
        value_field = field.message_type.fields_by_name["value"]
        for key, item in value.items():
            if value_field.type == F.TYPE_MESSAGE:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        for item in value:
            if field.type == F.TYPE_MESSAGE:
                target.add().CopyFrom(item)
            else:
                target.append(item)
    elif field.type == F.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor`` with any subset of fields set to any values (nested
    messages up to :data:`MAX_DEPTH`)."""
    cls = message_class(descriptor)
    if depth >= MAX_DEPTH:
        return st.just(cls())

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        for field in descriptor.fields:
            if not draw(st.booleans()):
                continue
            if _is_map(field):
                entry = field.message_type.fields_by_name
                value = draw(
                    st.dictionaries(
                        _value(entry["key"], depth), _value(entry["value"], depth), max_size=3
                    )
                )
            elif field.is_repeated:
                value = draw(st.lists(_value(field, depth), max_size=3))
            else:
                value = draw(_value(field, depth))
            _assign(message, field, value)
        return message

    return build()


def field_paths(
    descriptor: Descriptor, want: Any, depth: int = 0
) -> Iterator[tuple[FieldDescriptor, ...]]:
    """Paths (field after field, through messages, repeated fields and map entries) to every
    field ``want(field)`` accepts."""
    for field in descriptor.fields:
        if want(field):
            yield (field,)
        if field.type == F.TYPE_MESSAGE and depth < MAX_DEPTH:
            for rest in field_paths(field.message_type, want, depth + 1):
                yield (field, *rest)


def string_paths(descriptor: Descriptor) -> list[tuple[FieldDescriptor, ...]]:
    """Every string field reachable from ``descriptor`` (map keys and values included)."""
    return list(field_paths(descriptor, lambda f: f.type == F.TYPE_STRING))


def repeated_paths(descriptor: Descriptor) -> list[tuple[FieldDescriptor, ...]]:
    """Every repeated field (maps included) reachable through singular messages only."""
    return [
        path
        for path in field_paths(descriptor, lambda f: f.is_repeated)
        if not any(f.is_repeated for f in path[:-1])
    ]


def set_path(message: Message, path: tuple[FieldDescriptor, ...], value: Any) -> None:
    """Set the field at the end of ``path`` to ``value``, creating what leads to it (one
    element of a repeated field, one entry of a map)."""
    field, *rest = path
    if _is_map(field):
        entry, *inner = rest
        target = getattr(message, field.name)
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        if entry.name == "key":
            if value_field.type == F.TYPE_MESSAGE:
                target[value].SetInParent()
            else:
                target[value] = value_field.default_value
            return
        key = "k" if key_field.type == F.TYPE_STRING else 1
        if inner:
            set_path(target[key], tuple(inner), value)
        else:
            target[key] = value
    elif field.is_repeated:
        target = getattr(message, field.name)
        if rest:
            set_path(target.add(), tuple(rest), value)
        else:
            target.append(value)
    elif rest:
        set_path(getattr(message, field.name), tuple(rest), value)
    else:
        setattr(message, field.name, value)


def with_invalid_utf8(
    descriptor: Descriptor, path: tuple[FieldDescriptor, ...], bad: bytes
) -> bytes:
    """A serialized ``descriptor`` message whose string at ``path`` is the bytes ``bad``."""
    message = message_class(descriptor)()
    set_path(message, path, PLACEHOLDER.decode())
    data = message.SerializeToString()
    assert data.count(PLACEHOLDER) == 1 and len(bad) == len(PLACEHOLDER)
    return data.replace(PLACEHOLDER, bad)


def _huge(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    """One repeated field (or map) with thousands of entries, within the message limit."""
    paths = repeated_paths(descriptor)
    if not paths:
        return st.nothing()

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        path = draw(st.sampled_from(paths))
        count = draw(st.sampled_from([1001, 4000]))
        message = message_class(descriptor)()
        parent = message
        for field in path[:-1]:
            parent = getattr(parent, field.name)
        field = path[-1]
        if _is_map(field):
            entry = field.message_type.fields_by_name
            value = draw(_value(entry["value"], MAX_DEPTH - 1))
            keys = (f"k{i}" if entry["key"].type == F.TYPE_STRING else i for i in range(count))
            _assign(parent, field, dict.fromkeys(keys, value))
        else:
            _assign(parent, field, [draw(_value(field, MAX_DEPTH - 2))] * count)
        return message.SerializeToString()

    return build()


def _deep_groups(depth: int) -> bytes:
    """Unknown field 1000 as a group nested ``depth`` times (the parser's recursion limit)."""
    start, end = b"\xc3\x3e", b"\xc4\x3e"  # field 1000, wire types 3 and 4 as varints
    return start * depth + end * depth


def leaf_paths(descriptor: Descriptor) -> list[tuple[FieldDescriptor, ...]]:
    """Every field that is not itself a message (map entries and repeated fields lead to
    one element each)."""
    return list(field_paths(descriptor, lambda f: f.type != F.TYPE_MESSAGE))


def _varied(seeds: list[Message]) -> st.SearchStrategy[Message]:
    """A seed (a request the server accepts) with one to three leaf fields set to any
    value: the extremes reach the code behind validation, not only validation."""
    descriptor = seeds[0].DESCRIPTOR
    leaves = leaf_paths(descriptor)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = message_class(descriptor)()
        message.CopyFrom(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0 if not leaves else 1, min(3, len(leaves))))):
            path = draw(st.sampled_from(leaves))
            set_path(message, path, draw(_scalar(path[-1])))
        return message

    return build()


def bodies(descriptor: Descriptor, seeds: list[Message] | None = None) -> st.SearchStrategy[bytes]:
    """Hostile serialized bodies for a request of type ``descriptor``; ``seeds`` are valid
    requests to vary (more calls get past validation)."""
    random_messages = messages(descriptor)
    if seeds:
        random_messages = st.one_of(random_messages, _varied(seeds), st.sampled_from(seeds))
    valid = random_messages.map(lambda m: m.SerializeToString())
    strings = string_paths(descriptor)

    @st.composite
    def truncated(draw: st.DrawFn) -> bytes:
        data = draw(valid)
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(valid) or b"\x0a\x01q")
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)

    not_utf8 = (
        st.builds(
            with_invalid_utf8,
            st.just(descriptor),
            st.sampled_from(strings),
            st.sampled_from(NOT_UTF8),
        )
        if strings
        else st.nothing()
    )
    return st.one_of(
        st.binary(max_size=64),
        valid,
        truncated(),
        mutated(),
        not_utf8,
        _huge(descriptor),
        st.integers(1, 300).map(_deep_groups),
    )
