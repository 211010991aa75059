"""Structural deltas between JSON values (sans-I/O): ``diff`` on the edge, ``apply`` on the gateway.

A delta is a tree of *nodes*, each a JSON array whose first element names the operation:

- ``["=", ]`` the base value, unchanged.
- ``["v", value]`` exactly ``value``.
- ``["r", hash]`` the value whose content hash is ``hash`` (content the gateway already holds).
- ``["o", {key: node}, keys]`` an object built on the base object (``{}`` when the base is not one): each key of
  the result is taken from the base unless ``node`` rebuilds it (against the base's value, or against nothing for
  a new key). ``keys`` lists the result's keys in order; ``null`` means the base's keys in order, then the new ones.
- ``["f", {key: node}]`` a new object, its keys in this order, each value built from nothing.
- ``["a", [segment, ...]]`` an array built from segments: ``["c", start, count]`` copies ``base[start:start+count]``,
  ``["p", index, node]`` is ``base[index]`` rebuilt by ``node``, ``["n", node]`` is a new element.

Values are compared and hashed by their compact JSON serialisation (orjson's, keys in their order), so ``1`` and
``true`` or ``{"a":1,"b":2}`` and ``{"b":2,"a":1}`` are different values and a rebuilt request serialises to exactly
the bytes of the original. The property the tests hold this module to: ``apply(base, diff(base, new)) == new``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container, Iterator
from typing import Any, Final, Literal, TypeAlias

import orjson

JSONValue: TypeAlias = Any
Node: TypeAlias = list[Any]
Resolve: TypeAlias = Callable[[str], JSONValue]

MIN_REF_BYTES: Final = 256
"""Values at least this large (serialised) are worth a content reference when the gateway holds them."""
MAX_DEPTH: Final = 128


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()
"""The base of a value that has none (a new key or element)."""


class DeltaError(ValueError):
    """A delta that cannot be applied: malformed, or naming content the gateway does not hold."""

    def __init__(self, message: str, missing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.missing = missing


def dumps(value: JSONValue) -> bytes:
    """The compact serialisation values are compared and hashed by."""
    return orjson.dumps(value)


def content_hash(serialised: bytes) -> str:
    """The content hash of a serialised value (128 bits of SHA-256, hex)."""
    return hashlib.sha256(serialised).hexdigest()[:32]


def value_hash(value: JSONValue) -> str:
    return content_hash(dumps(value))


def large_values(value: JSONValue, min_bytes: int = MIN_REF_BYTES) -> Iterator[tuple[str, JSONValue, int]]:
    """Every sub-value (the value itself included) whose serialisation is at least ``min_bytes``, as
    ``(hash, value, size)``. Both ends compute this on every rebuilt request: it is what the gateway holds."""
    serialised = dumps(value)
    if len(serialised) < min_bytes:
        return
    yield content_hash(serialised), value, len(serialised)
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        yield from large_values(child, min_bytes)


Limit: TypeAlias = Literal["bytes", "values", "depth"]


class _PastLimitError(Exception):
    def __init__(self, limit: Limit) -> None:
        self.limit = limit


def limit_passed(value: JSONValue, *, max_bytes: int, max_values: int, max_depth: int) -> Limit | None:
    """Which limit ``value`` passes, if any: its serialised size in UTF-8 bytes (a lower bound, counted without
    serialising), its JSON values (every object, array, string, number and literal; keys do not count) or its
    nesting depth (the value itself is level 1).

    A delta can name one held value many times (references, copies of base elements); the rebuilt tree shares those
    subtrees, so it is small in memory while its serialisation may be enormous. This walks each shared subtree once
    and stops as soon as a count passes its limit, so its cost is bounded by the limits, never by the serialisation,
    and it recurses at most ``max_depth`` levels.
    """
    memo: dict[int, tuple[int, int, int]] = {}

    def walk(node: JSONValue, level: int) -> tuple[int, int, int]:
        """(size, values, height) of ``node``, found ``level`` containers deep."""
        if isinstance(node, str):
            return _utf8_size(node) + 2, 1, 0
        if not isinstance(node, dict | list):
            return 1, 1, 0
        known = memo.get(id(node))
        if known is None:
            if level >= max_depth:  # this container is one level deeper than the limit
                raise _PastLimitError("depth")
            size, values, height = 2 + max(0, len(node) - 1), 1, 0
            if isinstance(node, dict):
                size += sum(_utf8_size(key) + 3 for key in node)
            for child in node.values() if isinstance(node, dict) else node:
                child_size, child_values, child_height = walk(child, level + 1)
                size, values, height = size + child_size, values + child_values, max(height, child_height)
                if size > max_bytes:
                    raise _PastLimitError("bytes")
                if values > max_values:
                    raise _PastLimitError("values")
            known = memo[id(node)] = (size, values, height + 1)
        if level + known[2] > max_depth:
            raise _PastLimitError("depth")
        return known

    try:
        size, values, _ = walk(value, 0)
    except _PastLimitError as past:
        return past.limit
    return "bytes" if size > max_bytes else "values" if values > max_values else None


def _utf8_size(text: str) -> int:
    """The bytes of ``text`` in UTF-8, as the limit counts them (without encoding it when it is ASCII)."""
    return len(text) if text.isascii() else len(text.encode())


class _Differ:
    def __init__(self, known: Container[str], min_ref_bytes: int) -> None:
        self.known = known
        self.min_ref_bytes = min_ref_bytes

    def diff(self, base: JSONValue, new: JSONValue) -> Node:
        if base is not MISSING and dumps(base) == dumps(new):
            return ["="]
        if isinstance(base, dict) and isinstance(new, dict):
            return self._smaller(self._diff_object(base, new), new)
        if isinstance(base, list) and isinstance(new, list):
            return self._smaller(self._diff_array(base, new), new)
        return self.fresh(new)

    def fresh(self, value: JSONValue) -> Node:
        """A value with no base: literal, except for large parts the gateway already holds."""
        serialised = dumps(value)
        if len(serialised) < self.min_ref_bytes:
            return ["v", value]
        digest = content_hash(serialised)
        if digest in self.known:
            return ["r", digest]
        if isinstance(value, dict):
            children = {key: self.fresh(child) for key, child in value.items()}
            if any(node[0] != "v" for node in children.values()):
                return ["f", children]
        elif isinstance(value, list):
            elements = [self.fresh(child) for child in value]
            if any(node[0] != "v" for node in elements):
                return ["a", [["n", node] for node in elements]]
        return ["v", value]

    def _smaller(self, patch: Node, new: JSONValue) -> Node:
        fresh = self.fresh(new)
        return patch if len(dumps(patch)) <= len(dumps(fresh)) else fresh

    def _diff_object(self, base: dict[str, JSONValue], new: dict[str, JSONValue]) -> Node:
        changes: dict[str, Node] = {}
        for key, value in new.items():
            if key in base:
                node = self.diff(base[key], value)
                if node[0] != "=":
                    changes[key] = node
            else:
                changes[key] = self.fresh(value)
        natural = [key for key in base if key in new] + [key for key in new if key not in base]
        deleted = any(key not in new for key in base)
        return ["o", changes, list(new) if deleted or natural != list(new) else None]

    def _diff_array(self, base: list[JSONValue], new: list[JSONValue]) -> Node:
        base_serialised = [dumps(element) for element in base]
        positions: dict[bytes, list[int]] = {}
        for index, serialised in enumerate(base_serialised):
            positions.setdefault(serialised, []).append(index)
        segments: list[list[Any]] = []
        previous = -1
        for index, element in enumerate(new):
            serialised = dumps(element)
            found = positions.get(serialised)
            if found:
                following = previous + 1
                continues = following < len(base) and base_serialised[following] == serialised
                source = following if continues else found[0]
                last = segments[-1] if segments else None
                if last is not None and last[0] == "c" and last[1] + last[2] == source:
                    last[2] += 1
                else:
                    segments.append(["c", source, 1])
                previous = source
                continue
            candidate = previous + 1 if previous + 1 < len(base) else index if index < len(base) else None
            if candidate is not None and type(base[candidate]) is type(element) and isinstance(element, dict | list):
                patch = self.diff(base[candidate], element)
                fresh = self.fresh(element)
                if len(dumps(patch)) < len(dumps(fresh)):
                    segments.append(["p", candidate, patch])
                    previous = candidate
                    continue
                segments.append(["n", fresh])
                continue
            segments.append(["n", self.fresh(element)])
        return ["a", segments]


def diff(base: JSONValue, new: JSONValue, known: Container[str] = (), min_ref_bytes: int = MIN_REF_BYTES) -> Node:
    """The delta that rebuilds ``new`` from ``base``.

    Args:
        base: the value the receiver holds (``MISSING`` for none).
        new: the value to send.
        known: content hashes the receiver holds; large parts of ``new`` with these hashes cross as references.
        min_ref_bytes: the smallest value worth a reference.
    """
    return _Differ(known, min_ref_bytes).diff(base, new)


def apply(base: JSONValue, node: JSONValue, resolve: Resolve) -> JSONValue:
    """Rebuild a value from its base and a delta.

    Args:
        base: the base value (``MISSING`` for none).
        node: the delta, as decoded from the wire (untrusted).
        resolve: returns the value of a content hash; raises ``KeyError`` for one it does not hold.

    Raises:
        DeltaError: the delta is malformed, or names content ``resolve`` does not know (``missing`` lists it).
    """
    missing: list[str] = []
    result = _apply(base, node, resolve, missing, 0)
    if missing:
        raise DeltaError("the delta references content the gateway does not hold", tuple(missing))
    return result


def _apply(base: JSONValue, node: JSONValue, resolve: Resolve, missing: list[str], depth: int) -> JSONValue:
    if depth > MAX_DEPTH:
        raise DeltaError("the delta is nested too deeply")
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise DeltaError("a delta node must be an array starting with its operation")
    op = node[0]
    if op == "=" and len(node) == 1:
        if base is MISSING:
            raise DeltaError("'=' needs a base value")
        return base
    if op == "v" and len(node) == 2:
        return node[1]
    if op == "r" and len(node) == 2 and isinstance(node[1], str):
        try:
            return resolve(node[1])
        except KeyError:
            missing.append(node[1])
            return None
    if op == "o" and len(node) == 3 and isinstance(node[1], dict):
        return _apply_object(base, node[1], node[2], resolve, missing, depth)
    if op == "f" and len(node) == 2 and isinstance(node[1], dict):
        return {key: _apply(MISSING, child, resolve, missing, depth + 1) for key, child in node[1].items()}
    if op == "a" and len(node) == 2 and isinstance(node[1], list):
        return _apply_array(base, node[1], resolve, missing, depth)
    raise DeltaError(f"unknown or malformed delta node {op!r}")


def _apply_object(
    base: JSONValue, changes: dict[str, Any], keys: Any, resolve: Resolve, missing: list[str], depth: int
) -> dict[str, JSONValue]:
    source: dict[str, JSONValue] = base if isinstance(base, dict) else {}
    if keys is None:
        order = list(source) + [key for key in changes if key not in source]
    elif isinstance(keys, list) and all(isinstance(key, str) for key in keys):
        order = keys
    else:
        raise DeltaError("an object node's keys must be null or an array of strings")
    result: dict[str, JSONValue] = {}
    for key in order:
        if key in changes:
            result[key] = _apply(source.get(key, MISSING), changes[key], resolve, missing, depth + 1)
        elif key in source:
            result[key] = source[key]
        else:
            raise DeltaError(f"key {key!r} is neither in the base nor in the delta")
    return result


def _apply_array(
    base: JSONValue, segments: list[Any], resolve: Resolve, missing: list[str], depth: int
) -> list[JSONValue]:
    source: list[JSONValue] = base if isinstance(base, list) else []
    result: list[JSONValue] = []
    for segment in segments:
        if not isinstance(segment, list) or not segment:
            raise DeltaError("an array segment must be a non-empty array")
        kind = segment[0]
        if kind == "c" and len(segment) == 3 and _index(segment[1]) and _index(segment[2]):
            start, count = segment[1], segment[2]
            if start + count > len(source):
                raise DeltaError("a copy segment reaches past the base array")
            result.extend(source[start : start + count])
        elif kind == "p" and len(segment) == 3 and _index(segment[1]):
            if segment[1] >= len(source):
                raise DeltaError("a patch segment names an element past the base array")
            result.append(_apply(source[segment[1]], segment[2], resolve, missing, depth + 1))
        elif kind == "n" and len(segment) == 2:
            result.append(_apply(MISSING, segment[1], resolve, missing, depth + 1))
        else:
            raise DeltaError(f"unknown or malformed array segment {kind!r}")
    return result


def _index(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def shallow(value: JSONValue, min_ref_bytes: int = MIN_REF_BYTES) -> Node:
    """``value`` as a node whose large children are references: how a held value is stored, so that a chain of
    requests stores each large part once (``apply(MISSING, shallow(v), resolve) == v``, with ``resolve`` knowing the
    children)."""

    def child(element: JSONValue) -> Node:
        serialised = dumps(element)
        return ["r", content_hash(serialised)] if len(serialised) >= min_ref_bytes else ["v", element]

    if isinstance(value, dict):
        return ["f", {key: child(element) for key, element in value.items()}]
    if isinstance(value, list):
        return ["a", [["n", child(element)] for element in value]]
    return ["v", value]


def references(node: JSONValue) -> list[str]:
    """The content hashes a delta node refers to, found without applying it (for an untrusted node, what could be
    read of it; a list that only looks like a reference costs a lookup, nothing more)."""
    found: list[str] = []
    stack: list[tuple[JSONValue, int]] = [(node, 0)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_DEPTH:
            continue
        if isinstance(current, dict):
            stack.extend((child, depth + 1) for child in current.values())
        elif isinstance(current, list) and current:
            head = current[0]
            if head == "v":
                continue
            if head == "r" and len(current) == 2 and isinstance(current[1], str):
                found.append(current[1])
                continue
            stack.extend((child, depth + 1) for child in (current[1:] if isinstance(head, str) else current))
    return found
