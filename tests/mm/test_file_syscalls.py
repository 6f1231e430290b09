"""pread/pwrite, fstat, fstatfs, fsync/fdatasync, fallocate and readlink, per kernel.

On a dma-buf (alloc_file_pseudo: no FMODE_PREAD, no ->fsync, no ->fallocate, an inode
without a file type) the VFS answers ESPIPE, EINVAL and ENODEV; a memfd is a regular
shmem file that does all of it.  The fd and path of each file is what /proc shows.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmabuf_sim import Kernel
from dmabuf_sim.exporters.registry import EXPORTERS
from dmabuf_sim.fs import ANON_INODE_FS_MAGIC, DMA_BUF_MAGIC, TMPFS_MAGIC
from dmabuf_sim.fs_open import (
    FALLOC_FL_COLLAPSE_RANGE,
    FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE,
    FALLOC_FL_WRITE_ZEROES,
    FALLOC_FL_ZERO_RANGE,
)
from dmabuf_sim.mm.shmem import F_SEAL_SHRINK, F_SEAL_WRITE, MFD_ALLOW_SEALING, MFD_NOEXEC_SEAL
from dmabuf_sim.process import Process
from dmabuf_sim.uapi import DMA_BUF_SET_NAME, F_ADD_SEALS, UDMABUF_CREATE, UdmabufCreate

PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE
PUNCH = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
DMABUF_SPECS = [("v6.1", "system_heap"), ("v6.12", "udmabuf"), ("latest", "vgem")]


def errno_of(fn: object, *args: object) -> int:
    try:
        fn(*args)  # type: ignore[operator]
    except OSError as exc:
        return exc.errno or 0
    return 0


def dmabuf(spec: str, exporter: str, pages: int = 2, flags: int = os.O_RDWR) -> tuple[Process, int]:
    p = Kernel(spec).spawn("vfs")
    return p, EXPORTERS[exporter].make_fd(p, pages * PAGE, flags)


def memfd(p: Process, size: int, flags: int = MFD_ALLOW_SEALING) -> int:
    fd = p.memfd_create("probe", flags)
    p.ftruncate(fd, size)
    return fd


# -- dma-bufs ----------------------------------------------------------------------------
@pytest.mark.parametrize(("spec", "exporter"), [*DMABUF_SPECS, ("v5.10", "vgem")])
def test_dmabuf_file_syscalls(spec: str, exporter: str) -> None:
    """pread/pwrite ESPIPE (no FMODE_PREAD/PWRITE, before the read op is looked at); fsync
    and fdatasync EINVAL (no ->fsync); fallocate ENODEV (mode 0600 without a type), but
    EBADF first on a read-only export and EINVAL before that for len <= 0."""
    p, fd = dmabuf(spec, exporter)
    assert errno_of(p.pread, fd, 1, 0) == errno.ESPIPE
    assert errno_of(p.pwrite, fd, b"x", 0) == errno.ESPIPE
    assert errno_of(p.pread, fd, 1, -1) == errno.EINVAL  # pos < 0 comes first
    assert errno_of(p.pread, 99, 1, 0) == errno.EBADF
    assert errno_of(p.fsync, fd) == errno.EINVAL
    assert errno_of(p.fdatasync, fd) == errno.EINVAL
    assert errno_of(p.fallocate, fd, 0, 0, PAGE) == errno.ENODEV
    assert errno_of(p.fallocate, fd, PUNCH, 0, PAGE) == errno.ENODEV
    assert errno_of(p.fallocate, fd, 0, 0, 0) == errno.EINVAL
    if exporter != "udmabuf":  # udmabuf's fds are always O_RDWR
        _p, ro = dmabuf(spec, exporter, flags=os.O_RDONLY)
        assert errno_of(_p.fallocate, ro, 0, 0, PAGE) == errno.EBADF


@pytest.mark.parametrize(("spec", "exporter"), DMABUF_SPECS)
def test_dmabuf_fstat_and_fstatfs(spec: str, exporter: str) -> None:
    """generic_fillattr of the alloc_anon_inode inode: mode 0600 and no type, size and blocks
    the buffer's, PAGE_SIZE blocks, the dmabuf fs device; fstatfs: DMA_BUF_MAGIC."""
    p, fd = dmabuf(spec, exporter, pages=3)
    st_ = p.fstat(fd)
    assert st_.st_mode == 0o600 and stat.S_IFMT(st_.st_mode) == 0
    assert (st_.st_size, st_.st_blocks, st_.st_blksize, st_.st_nlink) == (3 * PAGE, 24, PAGE, 1)
    assert st_.st_ino == p.file(fd).f_inode.i_ino
    assert st_.st_dev == p.kernel.superblocks["dmabuf"].s_dev
    sfs = p.fstatfs(fd)
    assert (sfs.f_type, sfs.f_bsize, sfs.f_namelen) == (DMA_BUF_MAGIC, PAGE, 255)
    assert errno_of(p.fstat, 77) == errno.EBADF and errno_of(p.fstatfs, 77) == errno.EBADF


def test_old_specs_dmabuf_is_on_the_shared_anon_inode() -> None:
    """3.x: anon_inode_getfile — no size, the anon inode filesystem's magic."""
    k = Kernel("v3.5")
    p = k.spawn("vfs")
    fd = EXPORTERS["simple"].make_fd(p, PAGE, os.O_RDWR)
    assert p.fstat(fd).st_size == 0
    assert p.fstatfs(fd).f_type == ANON_INODE_FS_MAGIC
    assert p.readlink(f"/proc/self/fd/{fd}") == "anon_inode:dmabuf"


@pytest.mark.parametrize("spec", ["v6.12", "latest"])
def test_readlink_of_proc_fd_is_the_d_path(spec: str) -> None:
    """readlink(/proc/self/fd/N): "/dmabuf:" + the name (dmabuffs_dname), memfds
    "/memfd:<name> (deleted)", device nodes their path; ENOENT for a closed fd or a path
    that does not exist, EINVAL for one that is no symlink."""
    p, fd = dmabuf(spec, "system_heap")
    assert p.readlink(f"/proc/self/fd/{fd}") == "/dmabuf:"
    p.ioctl(fd, DMA_BUF_SET_NAME, "frame")
    assert p.readlink(f"/proc/{p.pid}/fd/{fd}") == "/dmabuf:frame"
    m = memfd(p, PAGE)
    assert p.readlink(f"/proc/self/fd/{m}") == "/memfd:probe (deleted)"
    dev = p.open("/dev/udmabuf", os.O_RDWR)
    assert p.readlink(f"/proc/self/fd/{dev}") == "/dev/udmabuf"
    assert p.readlink("/proc/self") == str(p.pid)
    assert errno_of(p.readlink, "/proc/self/fd/99") == errno.ENOENT
    assert errno_of(p.readlink, "/dev/udmabuf") == errno.EINVAL
    assert errno_of(p.readlink, "/no/such/file") == errno.ENOENT
    with pytest.raises(TypeError):
        p.readlink(3)  # type: ignore[arg-type]


# -- memfds --------------------------------------------------------------------------------
def test_memfd_pread_pwrite_do_not_move_the_file_position() -> None:
    p = Kernel("v6.12").spawn("vfs")
    m = memfd(p, 2 * PAGE)
    assert p.pwrite(m, b"hello", PAGE - 2) == 5
    assert p.pread(m, 5, PAGE - 2) == b"hello"
    assert p.lseek(m, 0, os.SEEK_CUR) == 0
    assert p.pread(m, 10, 2 * PAGE) == b""  # at the end: nothing
    assert p.read(m, 3) == bytes(3) and p.lseek(m, 0, os.SEEK_CUR) == 3
    assert p.fstat(m).st_size == 2 * PAGE
    assert p.pwrite(m, b"!", 3 * PAGE) == 1  # pwrite past the end grows the file
    assert p.fstat(m).st_size == 3 * PAGE + 1


def test_memfd_seals_refuse_pwrite_and_fallocate() -> None:
    """F_SEAL_WRITE: pwrite and PUNCH_HOLE EPERM (shmem_write_begin, shmem_fallocate)."""
    p = Kernel("v6.12").spawn("vfs")
    m = memfd(p, PAGE)
    p.fcntl(m, F_ADD_SEALS, F_SEAL_WRITE)
    assert errno_of(p.pwrite, m, b"x", 0) == errno.EPERM
    assert errno_of(p.fallocate, m, PUNCH, 0, PAGE) == errno.EPERM


def test_memfd_fstat_fsync_fstatfs() -> None:
    """A memfd is a regular shmem file: S_IFREG|0777 (0666 with MFD_NOEXEC_SEAL, 6.3+),
    blocks for the pages it holds, TMPFS_MAGIC, noop_fsync."""
    p = Kernel("v6.12").spawn("vfs")
    m = memfd(p, 3 * PAGE)
    p.pwrite(m, b"x", PAGE)
    st_ = p.fstat(m)
    assert (st_.st_mode, st_.st_size, st_.st_blocks) == (0o100777, 3 * PAGE, 8)
    assert p.fstatfs(m).f_type == TMPFS_MAGIC
    p.fsync(m)
    p.fdatasync(m)
    assert p.fstat(p.memfd_create("nx", MFD_NOEXEC_SEAL)).st_mode == 0o100666
    p510 = Kernel("v5.10").spawn("vfs")
    assert errno_of(p510.memfd_create, "nx", MFD_NOEXEC_SEAL) == errno.EINVAL


def test_fallocate_allocates_and_grows_unless_keep_size() -> None:
    p = Kernel("v6.12").spawn("vfs")
    m = memfd(p, PAGE)
    p.fallocate(m, FALLOC_FL_KEEP_SIZE, 0, 4 * PAGE)
    assert p.fstat(m).st_size == PAGE and p.fstat(m).st_blocks == 32
    p.fallocate(m, 0, 0, 2 * PAGE + 1)
    assert p.fstat(m).st_size == 2 * PAGE + 1
    assert errno_of(p.fallocate, m, FALLOC_FL_ZERO_RANGE, 0, PAGE) == errno.EOPNOTSUPP  # shmem
    assert errno_of(p.fallocate, m, FALLOC_FL_PUNCH_HOLE, 0, PAGE) == errno.EOPNOTSUPP  # no KEEP
    assert errno_of(p.fallocate, m, 0, -1, PAGE) == errno.EINVAL


@pytest.mark.parametrize(
    ("spec", "want"),
    [("v6.1", errno.EINVAL), ("v6.12", errno.EOPNOTSUPP)],
)
def test_fallocate_mode_checks_per_kernel(spec: str, want: int) -> None:
    """COLLAPSE_RANGE mixed with KEEP_SIZE: EINVAL from the bit tests of 6.1, EOPNOTSUPP from
    6.12's one switch on the mode; WRITE_ZEROES is unknown before 6.17 (EOPNOTSUPP)."""
    p = Kernel(spec).spawn("vfs")
    m = memfd(p, PAGE)
    assert errno_of(p.fallocate, m, FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_KEEP_SIZE, 0, PAGE) == want
    assert errno_of(p.fallocate, m, FALLOC_FL_WRITE_ZEROES, 0, PAGE) == errno.EOPNOTSUPP
    _p, fd = dmabuf(spec, "system_heap")
    assert errno_of(_p.fallocate, fd, FALLOC_FL_WRITE_ZEROES, 0, PAGE) == errno.EOPNOTSUPP
    # 6.17+: a known mode, so the dma-buf gets as far as its missing file type
    p2, fd2 = dmabuf("latest", "system_heap")
    assert errno_of(p2.fallocate, fd2, FALLOC_FL_WRITE_ZEROES, 0, PAGE) == errno.ENODEV


@pytest.mark.parametrize("spec", ["v6.1", "v6.12", "latest"])
def test_punch_hole_in_a_memfd_behind_a_udmabuf_keeps_the_pinned_pages(spec: str) -> None:
    """fallocate(PUNCH_HOLE) of the memfd: its own mapping and read() see zeros (the pages
    left the page cache, shared PTEs were zapped), but udmabuf pinned the pages at create
    time: its mapping keeps the old bytes, now shared with nobody."""
    k = Kernel(spec)
    p = k.spawn("vfs")
    m = memfd(p, 2 * PAGE)
    p.fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK)
    p.pwrite(m, b"A" * 2 * PAGE, 0)
    dev = p.open("/dev/udmabuf", os.O_RDWR)
    ufd = p.ioctl(dev, UDMABUF_CREATE, UdmabufCreate(m, 0, 0, 2 * PAGE))
    ubuf = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, ufd, 0)
    mem = p.mmap(0, 2 * PAGE, RW, mmap.MAP_SHARED, m, 0)
    assert p.read_memory(mem, 1) == b"A"
    p.fallocate(m, PUNCH, 0, 2 * PAGE)
    assert p.read_memory(ubuf, 2) == b"AA" and p.read_memory(ubuf + PAGE, 2) == b"AA"
    assert p.read_memory(mem, 2) == bytes(2) and p.pread(m, 2, PAGE) == bytes(2)
    p.write_memory(ubuf, b"Z")
    assert p.read_memory(mem, 1) == b"\0"  # two copies now
    p.exit()
    assert not k.bad_pages


@given(offset=st.integers(0, 3 * PAGE), length=st.integers(1, 3 * PAGE))
def test_property_punch_hole_zeroes_exactly_the_range(offset: int, length: int) -> None:
    """shmem_fallocate(PUNCH_HOLE): bytes in [offset, offset+length) read as zero, every
    other byte keeps its value, and the size does not change (KEEP_SIZE)."""
    p = Kernel("v6.12").spawn("vfs")
    m = memfd(p, 3 * PAGE)
    data = bytes((i * 7 + 1) & 0xFF or 1 for i in range(3 * PAGE))
    p.pwrite(m, data, 0)
    p.fallocate(m, PUNCH, offset, length)
    end = min(offset + length, 3 * PAGE)
    want = data[:offset] + bytes(max(0, end - offset)) + data[end:]
    assert p.pread(m, 3 * PAGE, 0) == want[: 3 * PAGE]
    assert p.fstat(m).st_size == 3 * PAGE
