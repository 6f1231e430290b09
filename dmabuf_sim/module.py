"""Loadable modules and their reference counts (kernel/module/main.c).

A driver built as a module is a ``struct module``: its code lives only while
it is loaded.  Whatever may call into that code holds a reference
(``try_module_get``/``module_put``):

* an open file whose ``f_op`` the module provides (``fops_get`` at open,
  ``fops_put`` at the last ``fput``): a DRM fd of vgem;
* a dma-buf exported with ``exp_info.owner`` = the module (``dma_buf_export``
  fails ``-ENOENT`` when the get fails; ``dma_buf_release`` puts it after
  ``ops->release``) — which covers every fd, mapping, attachment and kernel
  reference of the buffer, since they all keep the buffer.

``delete_module(name, flags)`` (what kmod's ``rmmod`` calls, with
``O_NONBLOCK``) fails ``EWOULDBLOCK`` while the count is not zero, and
otherwise runs the module's exit (vgem unregisters ``/dev/dri/card0``: later
opens fail ``ENOENT``) and frees it.  An exporter that forgets
``exp_info.owner`` lets its module go while its buffers still point at the
module's code: every unload is recorded in ``kernel.module_unloads`` with the
live objects that still use the module's code (``leftovers``), which is what
a conformance check needs.

Built-in code has no ``struct module`` (``THIS_MODULE`` is NULL and
``try_module_get(NULL)`` succeeds): the dma-heaps and udmabuf
(``CONFIG_UDMABUF`` is ``bool``) cannot be unloaded; ``delete_module`` of
their names fails ``ENOENT``.

Simplified: no dependencies between modules (``source_list`` is empty), no
``CONFIG_MODULE_FORCE_UNLOAD`` (``O_TRUNC`` forces nothing), no
capability checks; a module's code is the objects it declares in ``code``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from attrs import define, field, frozen

from .errors import KernelError
from .kstate import Key
from .trace import kernel_function
from .wait import wait_event

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = [
    "MODULE_NAME_LEN",
    "Module",
    "ModuleUnload",
    "delete_module",
    "find_module",
    "load_module",
    "module_put",
    "module_refcount",
    "register_module_file",
    "request_module",
    "try_module_get",
]

MODULE_NAME_LEN = 56
"""``64 - sizeof(unsigned long)``: longer names are cut at 55 characters."""

ModuleState = Literal["coming", "live", "going", "unloaded"]
InitFn = Callable[["Module"], "int | None"]
ExitFn = Callable[["Module"], None]


@define(eq=False, slots=True)
class Module:
    """``struct module``: a loaded module, its state and its reference count."""

    kernel: Kernel = field(repr=False)
    name: str
    exit: ExitFn | None = field(default=None, repr=False)
    has_init: bool = False
    code: tuple[Any, ...] = field(default=(), repr=False)
    """What the module's text defines (ops objects or classes): what dangles once it is gone."""
    refcnt: int = 0
    """References taken with try_module_get (``module_refcount``)."""
    state: ModuleState = "coming"
    private: Any = field(default=None, repr=False)
    """The driver's own state (what its init made, for its exit)."""

    def trace_name(self) -> str:
        return f"module({self.name})"

    def defines(self, obj: Any) -> bool:
        """Whether ``obj`` (an ops object) is part of this module's code."""
        return any(obj is c or (isinstance(c, type) and isinstance(obj, c)) for c in self.code)


@frozen
class ModuleUnload:
    """A module that was unloaded, when, and what still used its code at that moment."""

    name: str
    at: int
    leftovers: tuple[str, ...]
    """Live objects using the module's code (e.g. dma-bufs with its ops): each one will
    call into freed memory.  Empty when the module was unloaded cleanly."""


@define(frozen=True, slots=True)
class _ModuleFile:
    """A ``.ko`` under /lib/modules that ``request_module`` (modprobe) can load."""

    init: InitFn | None
    exit: ExitFn | None
    code: tuple[Any, ...]


MODULE_FILES: Key[dict[str, _ModuleFile]] = Key("module_files")
"""The ``.ko`` files installed under /lib/modules, by module name."""


def _files(kernel: Kernel) -> dict[str, _ModuleFile]:
    return kernel.subsys.setdefault(MODULE_FILES, dict)


@kernel_function("try_module_get", file="kernel/module/main.c")
def try_module_get(mod: Module | None) -> bool:
    """Take a reference unless the module is going away; NULL (built-in) always works."""
    if mod is None:
        return True
    if mod.state not in ("coming", "live"):
        return False
    mod.refcnt += 1
    return True


@kernel_function("module_put", file="kernel/module/main.c")
def module_put(mod: Module | None) -> None:
    if mod is None:
        return
    if mod.refcnt <= 0:
        mod.kernel.warn("module_put", "ret < 0")  # refcount underflow
        return
    mod.refcnt -= 1


def module_refcount(mod: Module) -> int:
    return mod.refcnt


def find_module(kernel: Kernel, name: str) -> Module | None:
    """The loaded module called ``name`` (``find_module``)."""
    return kernel.modules.get(name[: MODULE_NAME_LEN - 1])


@kernel_function("load_module", file="kernel/module/main.c")
def load_module(
    kernel: Kernel,
    name: str,
    *,
    init: InitFn | None = None,
    exit: ExitFn | None = None,
    code: tuple[Any, ...] = (),
) -> Module:
    """Load a module (``init_module``/``finit_module``, what ``insmod`` does).

    ``init(mod)`` runs with the new module (its ``THIS_MODULE``); a non-zero return
    fails the load with that errno and frees the module.  ``exit(mod)`` runs at unload;
    a module with an init but no exit can never be unloaded (``EBUSY``).  ``code`` lists
    the ops objects or classes the module defines.  Raises :class:`KernelError`
    (``EEXIST``) if a module of that name is loaded.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a module needs a non-empty str name, not {name!r}")
    name = name[: MODULE_NAME_LEN - 1]
    if name in kernel.modules:
        raise KernelError(errno.EEXIST, "load_module")
    mod = Module(kernel, name, exit=exit, has_init=init is not None, code=tuple(code))
    kernel.modules[name] = mod
    ret = init(mod) if init is not None else 0
    if ret:
        del kernel.modules[name]
        mod.state = "unloaded"
        raise KernelError(abs(ret), "do_init_module")
    mod.state = "live"
    return mod


def register_module_file(
    kernel: Kernel,
    name: str,
    *,
    init: InitFn | None = None,
    exit: ExitFn | None = None,
    code: tuple[Any, ...] = (),
) -> None:
    """Install a module file that :func:`request_module` can load (and load again)."""
    _files(kernel)[name] = _ModuleFile(init, exit, tuple(code))


@kernel_function("request_module", file="kernel/module/kmod.c")
def request_module(kernel: Kernel, name: str) -> int:
    """``modprobe name``: 0 if loaded (or already loaded), ``-ENOENT`` if no such module."""
    if find_module(kernel, name) is not None:
        return 0
    file = _files(kernel).get(name)
    if file is None:
        return -errno.ENOENT
    try:
        load_module(kernel, name, init=file.init, exit=file.exit, code=file.code)
    except KernelError as err:
        return -err.errno
    return 0


@kernel_function("delete_module", file="kernel/module/main.c")
def delete_module(kernel: Kernel, name: str, flags: int) -> int:
    """The ``delete_module`` syscall: ``-ENOENT`` if not loaded; ``-EBUSY`` if not live or
    without an exit; ``-EWOULDBLOCK`` while referenced; else the exit runs and 0.

    Specs before 3.13 (``delete_module_never_waits`` False) without ``O_NONBLOCK`` mark
    the module going and sleep, uninterruptibly, until the last reference goes.
    """
    mod = find_module(kernel, name)
    if mod is None:
        return -errno.ENOENT
    if mod.state != "live":
        return -errno.EBUSY  # "already dying"
    if mod.has_init and mod.exit is None:
        return -errno.EBUSY  # "This module can't be removed"
    if mod.refcnt:
        if kernel.spec.delete_module_never_waits or flags & os.O_NONBLOCK:
            return -errno.EWOULDBLOCK
        mod.state = "going"
        wait_event(
            kernel,
            lambda: mod.refcnt == 0,
            deadline=None,
            intr=False,
            func="delete_module",
            what=lambda: f"the last reference to {mod.trace_name()}",
        )
    mod.state = "going"
    if mod.exit is not None:
        mod.exit(mod)
    _free_module(kernel, mod)
    return 0


def _free_module(kernel: Kernel, mod: Module) -> None:
    del kernel.modules[mod.name]
    mod.state = "unloaded"
    leftovers = tuple(
        d.trace_name()
        for d in kernel.dma_bufs
        if not d.released and (d.owner is mod or mod.defines(d.ops))
    )
    kernel.module_unloads.append(ModuleUnload(mod.name, kernel.clock, leftovers))
    if leftovers:
        kernel.tracer.event(
            "module_unload", f"{mod.name} unloaded while in use by {', '.join(leftovers)}"
        )
