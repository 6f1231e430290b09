"""/proc/<pid>/maps text, byte for byte (fs/proc/task_mmu.c show_map_vma).

The header is ``start-end perms offset major:minor inode `` (note the trailing
space); named mappings are padded to column 73, anonymous ones end right after
that space.
"""

from __future__ import annotations

import mmap
import os

from dmabuf_sim import Kernel

PAGE = 4096
R, W, X = mmap.PROT_READ, mmap.PROT_WRITE, mmap.PROT_EXEC
SH, PR, ANON = mmap.MAP_SHARED, mmap.MAP_PRIVATE, mmap.MAP_ANONYMOUS
MAP_FIXED = 0x10


def line(start: int, end: int, perms: str, off: int, dev: str, ino: int, name: str = "") -> str:
    head = f"{start:08x}-{end:08x} {perms} {off:08x} {dev} {ino} "
    if not name:
        return head
    return head.ljust(72) + " " + name


def test_maps_lines_exact() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    ino = p.file(fd).f_inode.i_ino
    m = p.memfd_create("buf")
    p.ftruncate(m, 2 * PAGE)
    mino = p.file(m).f_inode.i_ino
    base = 0x10000000
    p.mmap(base, 2 * PAGE, R | W, SH | MAP_FIXED, fd, 3 * PAGE)
    p.mmap(base + 4 * PAGE, PAGE, R | X, PR | MAP_FIXED, fd, 0)
    p.mmap(base + 8 * PAGE, PAGE, R | W, PR | ANON | MAP_FIXED)
    p.mmap(base + 10 * PAGE, 2 * PAGE, R, SH | MAP_FIXED, m, 0)
    p.mmap(base + 12 * PAGE, PAGE, 0, PR | ANON | MAP_FIXED)
    expected = [
        line(base, base + 2 * PAGE, "rw-s", 3 * PAGE, "00:05", ino, "/dev/simmem"),
        line(base + 4 * PAGE, base + 5 * PAGE, "r-xp", 0, "00:05", ino, "/dev/simmem"),
        line(base + 8 * PAGE, base + 9 * PAGE, "rw-p", 0, "00:00", 0),
        line(base + 10 * PAGE, base + 12 * PAGE, "r--s", 0, "00:01", mino, "/memfd:buf (deleted)"),
        line(base + 12 * PAGE, base + 13 * PAGE, "---p", 0, "00:00", 0),
    ]
    assert p.maps() == "\n".join(expected) + "\n"
    assert p.maps().split("\n")[2].endswith(" 0 ")
    assert p.maps().split("\n")[0].index("/dev/simmem") == 73


def test_maps_after_split_shows_offsets_per_piece() -> None:
    k = Kernel("v6.12")
    p = k.spawn()
    fd = p.open("/dev/simmem", os.O_RDWR)
    ino = p.file(fd).f_inode.i_ino
    base = 0x20000000
    p.mmap(base, 3 * PAGE, R | W, SH | MAP_FIXED, fd, PAGE)
    p.mprotect(base + PAGE, PAGE, R)
    assert p.maps().splitlines() == [
        line(base, base + PAGE, "rw-s", PAGE, "00:05", ino, "/dev/simmem"),
        line(base + PAGE, base + 2 * PAGE, "r--s", 2 * PAGE, "00:05", ino, "/dev/simmem"),
        line(base + 2 * PAGE, base + 3 * PAGE, "rw-s", 3 * PAGE, "00:05", ino, "/dev/simmem"),
    ]


def test_empty_maps() -> None:
    k = Kernel("v6.12")
    assert k.spawn().maps() == ""
