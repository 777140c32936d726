"""Named registries: the one place where methods, models and initialisers are looked up by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Registry(dict[str, T]):
    """A ``name → item`` mapping whose lookups fail with the list of valid names."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")`` adds the decorated object under ``name``."""
        def decorate(item: T) -> T:
            self[name] = item
            return item
        return decorate

    def lookup(self, name: str) -> T:
        """The item called ``name``; a ``ValueError`` naming the valid choices otherwise."""
        try:
            return self[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {self.names()}") from None

    def names(self) -> list[str]:
        return sorted(self)
