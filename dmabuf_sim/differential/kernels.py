"""Real kernels to boot: Debian's packages, fetched with apt and cached, or your own.

``--kernel 6.12.117+deb12`` names a Debian kernel by release (the ``uname -r``
without ``-amd64``, or an ABI name such as ``6.1.0-57``).  The package is
fetched with ``apt-get download`` from the machine's configured apt sources,
unpacked, and reduced to what a run needs — ``vmlinuz``, its config, and the
modules vgem needs (``drm``, ``drm_kms_helper``, ``drm_shmem_helper``, ``vgem``,
or whatever ``depends=`` says in that kernel), decompressed — under
``<cache>/kernels/<release>/``.  The dma-heaps and udmabuf are built into
Debian's kernels; where a kernel has them as modules, they are loaded too.

``--kernel-image bzImage [--modules DIR]`` boots your own build instead; DIR
is a ``lib/modules/<version>`` tree or any directory holding ``.ko`` files.
"""

from __future__ import annotations

import gzip
import json
import lzma
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

from attrs import frozen

from .interp import ToolMissing

__all__ = [
    "PreparedKernel",
    "apt_releases",
    "check_release",
    "fetch_debian_kernel",
    "is_cached",
    "module_closure",
    "own_kernel",
]

MODULE_ROOTS = ("vgem", "udmabuf", "system_heap", "cma_heap")
"""Loaded when the kernel has them as modules (with everything they depend on)."""
_KO = re.compile(r"\.ko(\.xz|\.gz|\.zst)?$")


@frozen
class PreparedKernel:
    """A kernel ready to boot: its image and the modules to load, in order."""

    release: str
    image: Path
    modules: tuple[Path, ...] = ()
    packages: tuple[str, ...] = ()
    """Debian packages it came from, as ``name=version`` (empty for your own build)."""
    config: Path | None = None

    def describe(self) -> str:
        source = ", ".join(self.packages) if self.packages else str(self.image)
        return f"{self.release} ({source})"


# -- apt ------------------------------------------------------------------------------------
def _apt_version(package: str) -> str | None:
    """The candidate version apt would download, or None if no source has it."""
    if shutil.which("apt-cache") is None:
        return None
    proc = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", package],
        capture_output=True,
        text=True,
        check=False,
    )
    m = re.search(r"^Version: (\S+)", proc.stdout, re.M)
    return m.group(1) if proc.returncode == 0 and m else None


def apt_releases() -> list[str]:
    """Debian kernel releases the configured apt sources offer (amd64, generic flavour)."""
    if shutil.which("apt-cache") is None:
        return []
    proc = subprocess.run(
        ["apt-cache", "search", "--names-only", r"^linux-(image|binary)-[0-9].*-amd64"],
        capture_output=True,
        text=True,
        check=False,
    )
    found = set()
    for line in proc.stdout.splitlines():
        m = re.match(r"linux-(?:image|binary)-(\S+?)-amd64(?:-unsigned)?\s", line)
        # versioned generic kernels only: 6.1.0-57, 6.12.117+deb12 (not -rt, -cloud, metas)
        if m and re.fullmatch(r"\d+\.\d+\.\d+(-\d+|\+deb\d+)", m.group(1)):
            found.add(m.group(1))
    return sorted(found, key=_release_key)


def _release_key(release: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", release))


def _candidates(release: str) -> list[list[str]]:
    """Package sets that may carry ``release``, most likely first."""
    if release.startswith("linux-"):
        return [[release]]
    return [
        [f"linux-image-{release}-amd64-unsigned"],
        [f"linux-binary-{release}-amd64", f"linux-modules-{release}-amd64"],
        [f"linux-binary-{release}-amd64"],
        [f"linux-image-{release}-amd64"],
    ]


def _unavailable(release: str) -> ToolMissing:
    offered = apt_releases()
    listed = ", ".join(offered[-12:]) if offered else "none (is apt-get update done?)"
    hint = (
        "5.10 is in bullseye (bullseye-security)"
        if release.startswith("5.10")
        else "+deb13 kernels are in trixie (and trixie-backports); +deb12 in bookworm"
    )
    return ToolMissing(
        f"Debian kernel {release} is not in the configured apt sources (they offer: {listed})."
        f" Add a sources entry for the suite that carries it ({hint}) and run apt-get update,"
        " or boot your own build with --kernel-image bzImage [--modules DIR]"
    )


def _download(packages: list[str], into: Path) -> list[Path]:
    if shutil.which("apt-get") is None:
        raise ToolMissing("fetching a Debian kernel needs apt-get (a Debian or Ubuntu host)")
    proc = subprocess.run(
        ["apt-get", "download", *packages], cwd=into, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise ToolMissing(f"apt-get download {' '.join(packages)} failed:\n{proc.stderr.strip()}")
    return sorted(into.glob("*.deb"))


def _extract_deb(deb: Path, into: Path) -> None:
    """Unpack a .deb's data archive (dpkg-deb if present, else ar + tar here)."""
    if shutil.which("dpkg-deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
        return
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise ToolMissing(f"{deb} is not a Debian package")
    pos = 8
    while pos + 60 <= len(data):
        name = data[pos : pos + 16].decode().strip().rstrip("/")
        size = int(data[pos + 48 : pos + 58].decode().strip())
        body = data[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise ToolMissing(f"{deb} is zstd-compressed: install dpkg-deb (dpkg) to unpack it")
            with tempfile.NamedTemporaryFile(suffix=name) as fh:
                fh.write(body)
                fh.flush()
                with tarfile.open(fh.name) as tar:
                    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
                        tar.extractall(into, filter="data")
                    else:  # pragma: no cover
                        tar.extractall(into)  # a Debian package apt downloaded
            return
    raise ToolMissing(f"{deb} has no data archive")


# -- modules ----------------------------------------------------------------------------------
def _module_name(path: Path) -> str:
    return _KO.sub("", path.name).replace("-", "_")


def _read_module(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(raw)
    if path.name.endswith(".gz"):
        return gzip.decompress(raw)
    if path.name.endswith(".zst"):
        if shutil.which("zstd") is None:
            raise ToolMissing(f"{path.name} is zstd-compressed: install zstd")
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return raw


def _depends(image: bytes) -> list[str]:
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", image)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def module_closure(tree: Path, roots: Iterable[str] = MODULE_ROOTS) -> list[tuple[str, bytes]]:
    """``(name, decompressed image)`` for the roots present in ``tree`` and what they
    depend on, dependencies first (the order ``init_module`` needs)."""
    by_name = {_module_name(p): p for p in tree.rglob("*") if _KO.search(p.name) and p.is_file()}
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen or name not in by_name:
            return  # built in, or not in this tree: the kernel has it or does without
        if name in chain:
            return
        image = _read_module(by_name[name])
        for dep in _depends(image):
            visit(dep, (*chain, name))
        seen.add(name)
        order.append((name, image))

    for root in roots:
        visit(root, ())
    return order


def _save_modules(modules: list[tuple[str, bytes]], into: Path) -> tuple[Path, ...]:
    into.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in modules:
        path = into / f"{name}.ko"
        path.write_bytes(image)
        paths.append(path)
    return tuple(paths)


# -- the two sources -------------------------------------------------------------------------
def check_release(release: str) -> None:
    """ValueError unless ``release`` looks like a Debian kernel release or package name."""
    if not re.fullmatch(r"[A-Za-z0-9.+~_-]+", release):
        raise ValueError(f"--kernel {release!r}: expected a release such as 6.12.117+deb12")


def is_cached(release: str, cache: Path) -> bool:
    return (cache / "kernels" / release / "kernel.json").exists()


def fetch_debian_kernel(release: str, cache: Path) -> PreparedKernel:
    """A Debian kernel by release, downloaded once and cached (see the module docstring)."""
    check_release(release)
    home = cache / "kernels" / release
    meta = home / "kernel.json"
    if meta.exists():
        info = json.loads(meta.read_text())
        return PreparedKernel(
            release=info["release"],
            image=home / "vmlinuz",
            modules=tuple(home / "modules" / f"{m}.ko" for m in info["modules"]),
            packages=tuple(info["packages"]),
            config=home / "config" if (home / "config").exists() else None,
        )
    chosen: list[tuple[str, str]] = []
    for group in _candidates(release):
        versions = [(p, _apt_version(p)) for p in group]
        if all(v for _, v in versions):
            chosen = [(p, v) for p, v in versions if v]
            break
    if not chosen:
        raise _unavailable(release)
    home.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=home.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        debs = _download([p for p, _ in chosen], work)
        root = work / "root"
        for deb in debs:
            _extract_deb(deb, root)
        images = sorted((root / "boot").glob("vmlinuz-*"))
        if not images:
            raise ToolMissing(f"{', '.join(p for p, _ in chosen)} holds no boot/vmlinuz-*")
        staging = work / "kernel"
        staging.mkdir()
        shutil.copy2(images[0], staging / "vmlinuz")
        configs = sorted((root / "boot").glob("config-*"))
        if configs:
            shutil.copy2(configs[0], staging / "config")
        modules = module_closure(root / "lib" / "modules") if (root / "lib").exists() else []
        if not modules and (root / "usr" / "lib" / "modules").exists():
            modules = module_closure(root / "usr" / "lib" / "modules")
        _save_modules(modules, staging / "modules")
        packages = [f"{p}={v}" for p, v in chosen]
        (staging / "kernel.json").write_text(
            json.dumps(
                {"release": release, "packages": packages, "modules": [n for n, _ in modules]},
                indent=1,
            )
        )
        if home.exists():
            shutil.rmtree(home)
        staging.replace(home)
    return fetch_debian_kernel(release, cache)


def own_kernel(image: Path, modules: Path | None, cache: Path) -> PreparedKernel:
    """Your own ``bzImage`` and (optionally) a directory of its modules."""
    if not image.is_file():
        raise ToolMissing(f"--kernel-image {image}: no such file")
    loaded: tuple[Path, ...] = ()
    if modules is not None:
        if not modules.is_dir():
            raise ToolMissing(f"--modules {modules}: not a directory")
        closure = module_closure(modules)
        target = cache / "own-modules" / re.sub(r"[^A-Za-z0-9]+", "_", str(modules.resolve()))
        loaded = _save_modules(closure, target)
    return PreparedKernel(release=image.name, image=image, modules=loaded)
