"""memfd, shmem and seals (mm/memfd.c, mm/shmem.c).

udmabuf wraps sealed memfds and MAP_SHARED|MAP_ANONYMOUS is shmem underneath.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from collections.abc import Callable
from typing import Any

import pytest

from dmabuf_sim import SIGBUS, Kernel
from dmabuf_sim.uapi import F_ADD_SEALS, F_GET_SEALS

PAGE = 4096
R, W = mmap.PROT_READ, mmap.PROT_WRITE
SH, PR, ANON = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS
MFD_CLOEXEC, MFD_ALLOW_SEALING = 1, 2
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 1, 2, 4, 8
O_LARGEFILE = 0o100000  # the kernel's value on x86-64 (Python's os.O_LARGEFILE is 0)


def errno_of(fn: Callable[..., Any], *args: Any) -> int:
    with pytest.raises(OSError) as ei:
        fn(*args)
    return int(ei.value.errno)


def memfd(sealing: bool = True, size: int = 4 * PAGE) -> tuple[Kernel, Any, int]:
    k = Kernel("v6.12")
    p = k.spawn()
    fd = p.memfd_create("buf", MFD_ALLOW_SEALING if sealing else 0)
    p.ftruncate(fd, size)
    return k, p, fd


def test_memfd_create_basics() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    fd = p.memfd_create("name", MFD_CLOEXEC)

    assert p.fcntl(fd, fcntl.F_GETFD) == fcntl.FD_CLOEXEC
    assert p.fcntl(fd, fcntl.F_GETFL) == os.O_RDWR | O_LARGEFILE
    assert p.file(fd).f_inode.is_reg()
    assert p.fcntl(fd, F_GET_SEALS) == F_SEAL_SEAL  # no MFD_ALLOW_SEALING
    assert errno_of(p.memfd_create, "x", 0x100) == errno.EINVAL
    assert errno_of(p.memfd_create, "n" * 250, 0) == errno.EINVAL
    assert p.memfd_create("n" * 249, 0) >= 0
    assert p.lseek(fd, 0, os.SEEK_END) == 0


def test_ftruncate_read_write_and_lseek() -> None:
    _, p, fd = memfd(size=0)
    assert p.write(fd, b"hello world") == 11
    assert p.lseek(fd, 0, os.SEEK_CUR) == 11
    assert p.lseek(fd, 0, os.SEEK_END) == 11
    assert p.lseek(fd, 6, os.SEEK_SET) == 6
    assert p.read(fd, 100) == b"world"
    assert p.lseek(fd, -5, os.SEEK_END) == 6
    assert p.lseek(fd, 2, os.SEEK_CUR) == 8
    assert errno_of(p.lseek, fd, -1, os.SEEK_SET) == errno.EINVAL
    assert errno_of(p.lseek, fd, -100, os.SEEK_CUR) == errno.EINVAL
    assert errno_of(p.lseek, fd, 0, 5) == errno.EINVAL
    assert errno_of(p.lseek, fd, 0, -1) == errno.EINVAL
    assert p.lseek(fd, 0, os.SEEK_CUR) == 8  # failed seeks moved nothing
    p.ftruncate(fd, 3 * PAGE)
    assert p.lseek(fd, 0, os.SEEK_END) == 3 * PAGE
    p.lseek(fd, 0, os.SEEK_SET)
    assert p.read(fd, 3 * PAGE + 10) == b"hello world" + bytes(3 * PAGE - 11)


def test_shared_mapping_sees_file_writes_and_back() -> None:
    k, p, fd = memfd()
    addr = p.mmap(0, 4 * PAGE, R | W, SH, fd, 0)
    p.write(fd, b"via write")
    assert p.read_memory(addr, 9) == b"via write"
    p.write_memory(addr + PAGE, b"via store")
    p.lseek(fd, PAGE, os.SEEK_SET)
    assert p.read(fd, 9) == b"via store"
    child = p.fork()
    child.write_memory(addr + 2 * PAGE, b"child")
    assert p.read_memory(addr + 2 * PAGE, 5) == b"child"
    assert p.maps().split("\n")[0].endswith("/memfd:buf (deleted)")
    # a private mapping copies on write and leaves the file alone
    priv = p.mmap(0, PAGE, R | W, PR, fd, 0)
    p.write_memory(priv, b"PRIVATE!!")
    p.lseek(fd, 0, os.SEEK_SET)
    assert p.read(fd, 9) == b"via write"
    assert k.bad_pages == []


def test_fault_past_eof_is_sigbus_and_shrink_zaps() -> None:
    _, p, fd = memfd()
    addr = p.mmap(0, 8 * PAGE, R | W, SH, fd, 0)  # mapping longer than the file
    p.write_memory(addr + 3 * PAGE, b"last")
    with pytest.raises(SIGBUS) as ei:
        p.read_memory(addr + 4 * PAGE, 1)
    assert (ei.value.si_code, ei.value.addr) == (2, addr + 4 * PAGE)
    p.ftruncate(fd, 2 * PAGE)
    assert p.mm.pgtable.get((addr + 3 * PAGE) >> 12) is None
    with pytest.raises(SIGBUS):
        p.read_memory(addr + 3 * PAGE, 1)
    p.ftruncate(fd, 4 * PAGE)
    assert p.read_memory(addr + 3 * PAGE, 4) == bytes(4)  # truncated data is gone


def test_seals_shrink_grow_write_and_seal() -> None:
    _, p, fd = memfd()
    assert p.fcntl(fd, F_GET_SEALS) == 0
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK)
    assert p.fcntl(fd, F_GET_SEALS) == F_SEAL_SHRINK
    assert errno_of(p.ftruncate, fd, PAGE) == errno.EPERM
    p.ftruncate(fd, 8 * PAGE)  # growing is still fine
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_GROW)
    assert errno_of(p.ftruncate, fd, 9 * PAGE) == errno.EPERM
    p.lseek(fd, 8 * PAGE - 2, os.SEEK_SET)
    assert errno_of(p.write, fd, b"grow") == errno.EPERM
    p.ftruncate(fd, 8 * PAGE)  # same size: allowed
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE)
    assert errno_of(p.write, fd, b"x") == errno.EPERM
    assert errno_of(p.mmap, 0, PAGE, R | W, SH, fd, 0) == errno.EPERM
    p.mmap(0, PAGE, R, SH, fd, 0)  # read-only shared mapping is fine
    p.mmap(0, PAGE, R | W, PR, fd, 0)  # so is a private one
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL)
    assert errno_of(p.fcntl, fd, F_ADD_SEALS, F_SEAL_SHRINK) == errno.EPERM
    assert p.fcntl(fd, F_GET_SEALS) == F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE


def test_sealing_needs_mfd_allow_sealing() -> None:
    _, p, fd = memfd(sealing=False)
    assert errno_of(p.fcntl, fd, F_ADD_SEALS, F_SEAL_SHRINK) == errno.EPERM
    assert p.fcntl(fd, F_GET_SEALS) == F_SEAL_SEAL
    p.ftruncate(fd, PAGE)  # and so nothing stops shrinking


def test_seal_write_refused_while_writably_mapped() -> None:
    _, p, fd = memfd()
    addr = p.mmap(0, PAGE, R | W, SH, fd, 0)
    assert errno_of(p.fcntl, fd, F_ADD_SEALS, F_SEAL_WRITE) == errno.EBUSY
    assert p.fcntl(fd, F_GET_SEALS) == 0
    p.munmap(addr, PAGE)
    p.fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE)
    assert p.fcntl(fd, F_GET_SEALS) == F_SEAL_WRITE


def test_add_seals_check_order() -> None:
    """memfd_add_seals: FMODE_WRITE (EPERM), then unknown bits (EINVAL), then 'is it shmem'."""
    _, p, fd = memfd()
    ro = p.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    assert errno_of(p.fcntl, ro, F_ADD_SEALS, F_SEAL_SHRINK) == errno.EPERM
    assert errno_of(p.fcntl, ro, F_ADD_SEALS, 0x1000) == errno.EPERM
    assert errno_of(p.fcntl, fd, F_ADD_SEALS, 0x1000) == errno.EINVAL
    assert p.fcntl(ro, F_GET_SEALS) == 0
    dev_ro = p.open("/dev/simmem", os.O_RDONLY)
    dev_rw = p.open("/dev/simmem", os.O_RDWR)
    assert errno_of(p.fcntl, dev_ro, F_ADD_SEALS, F_SEAL_SHRINK) == errno.EPERM
    assert errno_of(p.fcntl, dev_rw, F_ADD_SEALS, F_SEAL_SHRINK) == errno.EINVAL
    assert errno_of(p.fcntl, dev_rw, F_GET_SEALS) == errno.EINVAL


def test_ftruncate_errors() -> None:
    _, p, fd = memfd()
    assert errno_of(p.ftruncate, fd, -1) == errno.EINVAL
    assert errno_of(p.ftruncate, 99, -1) == errno.EINVAL  # length is checked before the fd
    assert errno_of(p.ftruncate, 99, 0) == errno.EBADF
    dev = p.open("/dev/simmem", os.O_RDWR)
    assert errno_of(p.ftruncate, dev, 0) == errno.EINVAL  # not a regular file
    ro = p.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
    assert errno_of(p.ftruncate, ro, 0) == errno.EINVAL  # not open for writing
    assert p.lseek(fd, 0, os.SEEK_END) == 4 * PAGE


def test_shared_anonymous_mapping_is_shmem_shared_across_fork() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    addr = p.mmap(0, 2 * PAGE, R | W, SH | ANON)
    vma = p.mm.vma_lookup(addr)
    assert vma.vm_file is not None and vma.vm_pgoff == 0
    assert p.maps().split("\n")[0].endswith("/dev/zero (deleted)")
    child = p.fork()
    child.write_memory(addr + PAGE, b"from child")
    assert p.read_memory(addr + PAGE, 10) == b"from child"
    shm = vma.vm_file
    p.exit()
    assert not shm.released
    child.exit()
    assert shm.released
    assert k.bad_pages == []
