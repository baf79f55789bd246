"""Typed views over a :class:`~shardwise.state.port.StateStore`: ``str`` keys (UTF-8), values through a
serializer — JSON by default, or any object with ``dumps``/``loads`` the user gives (msgspec, pickle, …)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar

from shardwise.errors import StateStoreError
from shardwise.state.port import StateStore

__all__ = ["JSON", "JsonSerializer", "Serializer", "TypedView"]

T = TypeVar("T")


class Serializer(Protocol[T]):
    def dumps(self, value: T, /) -> bytes: ...

    def loads(self, data: bytes, /) -> T: ...


class JsonSerializer:
    """Compact, key-sorted JSON in UTF-8."""

    def dumps(self, value: Any, /) -> bytes:
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()

    def loads(self, data: bytes, /) -> Any:
        return json.loads(data)


JSON = JsonSerializer()


class TypedView(Generic[T]):
    """``store`` with ``str`` keys and ``T`` values; a value that does not deserialize raises
    :class:`~shardwise.errors.StateStoreError` naming the shard and key."""

    def __init__(self, store: StateStore, serializer: Serializer[T]) -> None:
        self._store = store
        self._serializer = serializer

    def _load(self, key: bytes, data: bytes) -> T:
        try:
            return self._serializer.loads(data)
        except Exception as exc:
            raise StateStoreError(
                f"shard {self._store.shard_id}: the value of key {key.decode(errors='replace')!r} does not "
                f"deserialize ({type(exc).__name__}: {exc}); was it written with another serializer?"
            ) from exc

    def get(self, key: str, default: T | None = None) -> T | None:
        data = self._store.get(key.encode())
        return default if data is None else self._load(key.encode(), data)

    def put(self, key: str, value: T) -> None:
        self._store.put(key.encode(), self._serializer.dumps(value))

    def delete(self, key: str) -> None:
        self._store.delete(key.encode())

    def items(self, prefix: str = "") -> Iterator[tuple[str, T]]:
        """Keys starting with ``prefix``, in order."""
        start = prefix.encode()
        end = _prefix_end(start)
        for key, data in self._store.range(start or None, end):
            yield key.decode(), self._load(key, data)

    def __len__(self) -> int:
        return len(self._store)


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key above every key starting with ``prefix`` (None: no bound)."""
    trimmed = prefix.rstrip(b"\xff")
    return None if not trimmed else trimmed[:-1] + bytes([trimmed[-1] + 1])
