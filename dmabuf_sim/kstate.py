"""Per-kernel state of drivers and subsystems, behind typed keys.

In C a driver or subsystem keeps its state in ``static`` variables: one copy per
machine.  Here one :class:`~dmabuf_sim.kernel.Kernel` owns all state, so each of
those statics lives in a registry of its kernel, under a :class:`Key` that the
owning module defines next to the type it holds::

    SIMMEM: Key[SimMem] = Key("simmem")        # in drivers/simmem.py
    kernel.drivers.add(SIMMEM, drv)            # at registration
    drv = kernel.drivers[SIMMEM]               # typed: a SimMem, no isinstance

``kernel.drivers`` holds the loaded drivers (what ``/sys/bus/*/drivers`` lists);
``kernel.subsys`` the statics of subsystems (dma-buf's file_operations, its
header's API, sync_file's fops ...).  A key's name also works for lookups
(``kernel.drivers["simmem"]``) where no type is needed: interactive use and tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, cast, overload

__all__ = ["Key", "Registry"]

T = TypeVar("T")


class Key(Generic[T]):
    """The typed name of one piece of per-kernel state (compared by identity)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Key({self.name!r})"


class Registry:
    """One kernel's drivers (or subsystem statics), each under its :class:`Key`."""

    __slots__ = ("_by_name", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._by_name: dict[str, tuple[object, object]] = {}

    def add(self, key: Key[T], value: T) -> T:
        """Register ``value`` under ``key``; a second registration under one name is a bug."""
        if key.name in self._by_name:
            raise ValueError(f"{self._what} {key.name!r} is already registered")
        self._by_name[key.name] = (key, value)
        return value

    def setdefault(self, key: Key[T], factory: Callable[[], T]) -> T:
        """The value under ``key``, made by ``factory()`` the first time it is asked for."""
        found = self.get(key)
        if found is None:
            return self.add(key, factory())
        return found

    def get(self, key: Key[T]) -> T | None:
        entry = self._by_name.get(key.name)
        if entry is None or entry[0] is not key:
            return None
        return cast(T, entry[1])  # add() stored it under this very key

    @overload
    def __getitem__(self, key: Key[T]) -> T: ...
    @overload
    def __getitem__(self, key: str) -> object: ...
    def __getitem__(self, key: Key[T] | str) -> T | object:
        name = key if isinstance(key, str) else key.name
        entry = self._by_name.get(name)
        if entry is None or (not isinstance(key, str) and entry[0] is not key):
            raise KeyError(name)
        return entry[1]

    def remove(self, key: Key[T], value: T | None = None) -> None:
        """Unregister ``key`` (only if it still holds ``value``, when one is given)."""
        entry = self._by_name.get(key.name)
        if entry is not None and entry[0] is key and (value is None or entry[1] is value):
            del self._by_name[key.name]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, Key):
            entry = self._by_name.get(key.name)
            return entry is not None and entry[0] is key
        return key in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __repr__(self) -> str:
        return f"<{self._what}s: {', '.join(self._by_name) or 'none'}>"
