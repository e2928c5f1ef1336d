"""A tiny keyed registry: one class per member, the key is the same string in TOML, CLI and MLflow."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from simulator.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps string keys to members of one kind (rules, tasks, architectures, ...).

    Args:
        kind: what the members are, used in error messages ("learning rule").
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._members: dict[str, T] = {}

    def add(self, key: str, member: T) -> T:
        """Register ``member`` under ``key``: the one registration idiom of every registry, called in a loop at
        the end of the module that defines the members. RuntimeError if ``key`` is taken."""
        if key in self._members:
            raise RuntimeError(f"{self.kind} {key!r} registered twice")
        self._members[key] = member
        return member

    def get(self, key: str) -> T:
        """Return the member registered under ``key``.

        Raises:
            ConfigError: naming the unknown key and every allowed one.
        """
        try:
            return self._members[key]
        except KeyError:
            allowed = ", ".join(sorted(self._members))
            raise ConfigError(f"unknown {self.kind} {key!r}; allowed: {allowed}") from None

    def __contains__(self, key: object) -> bool:
        return key in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def keys(self) -> list[str]:
        return list(self._members)

    def items(self) -> list[tuple[str, T]]:
        return list(self._members.items())
