"""Boot a real kernel under QEMU with the script interpreter as ``/init``.

The initramfs (written here, in the ``newc`` cpio format the kernel unpacks)
holds the static interpreter as ``/init``, the script, the modules to load
and a ``/dev/console`` node.  QEMU gets two serial ports: ``ttyS0`` is the
kernel's console (saved as the run's console log), ``ttyS1`` carries only the
interpreter's ``@dmas`` answers, so a printk never interleaves with them.

Acceleration: ``auto`` tries KVM when ``/dev/kvm`` can be opened and falls
back to TCG when KVM cannot run the guest (nested virtualisation often
cannot: QEMU reports "KVM internal error"); ``kvm`` and ``tcg`` force one.
Under TCG a Debian kernel boots in 5–30 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from attrs import define, field

from .interp import Answers, ToolMissing, build_interpreter, parse_answers
from .kernels import PreparedKernel
from .script import Script

__all__ = ["VmError", "VmRun", "newc_archive", "run_in_vm"]

QEMU = "qemu-system-x86_64"
KVM_GIVE_UP = 30.0
"""Seconds to wait for the interpreter's header under KVM before trying TCG."""
_KVM_FAILURES = ("KVM internal error", "kvm_buf_set_msrs", "failed to initialize kvm", "KVM: ")


class VmError(RuntimeError):
    """The VM did not finish the script; the message says what happened and where to look."""


@define
class VmRun:
    answers: Answers
    console_log: Path
    accel: str
    seconds: float
    notes: list[str] = field(factory=list)
    problem: str = ""
    """Why the run ended early (a timeout, a panic); empty when the script ran to its end."""


# -- initramfs ---------------------------------------------------------------------------------
def _newc_entry(
    name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), ino: int = 0
) -> bytes:
    namez = name.encode() + b"\0"
    fields = (
        ino,
        mode,
        0,
        0,
        1,
        0,
        len(data),
        0,
        0,
        rdev[0],
        rdev[1],
        len(namez),
        0,
    )  # ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    head = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    out = head + namez
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def newc_archive(
    files: dict[str, bytes], *, dirs: tuple[str, ...] = (), execs: tuple[str, ...] = ()
) -> bytes:
    """A ``newc`` cpio archive: directories, regular files, and ``dev/console``."""
    parts = []
    ino = 1
    for d in dirs:
        parts.append(_newc_entry(d, 0o040755, ino=ino))
        ino += 1
    parts.append(_newc_entry("dev/console", 0o020600, rdev=(5, 1), ino=ino))
    ino += 1
    for name, data in files.items():
        mode = 0o100755 if name in execs else 0o100644
        parts.append(_newc_entry(name, mode, data, ino=ino))
        ino += 1
    parts.append(_newc_entry("TRAILER!!!", 0))
    blob = b"".join(parts)
    return blob + b"\0" * (-len(blob) % 512)


def _initramfs(interp: Path, kernel: PreparedKernel, script: Script) -> bytes:
    files = {"init": interp.read_bytes(), "script.syscalls": script.text.encode()}
    order = []
    for mod in kernel.modules:
        files[f"modules/{mod.name}"] = mod.read_bytes()
        order.append(mod.name)
    files["modules/order"] = ("\n".join(order) + "\n").encode()
    return newc_archive(files, dirs=("dev", "proc", "sys", "modules"), execs=("init",))


# -- QEMU ----------------------------------------------------------------------------------------
def _kvm_usable() -> bool:
    return os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)


def _boot(
    qemu: str, kernel: PreparedKernel, initrd: Path, accel: str, workdir: Path, timeout: float
) -> tuple[str, str, str, float, bool]:
    """One boot; returns (answers text, console text, qemu stderr, seconds, timed out)."""
    console, answers, stderr = (
        workdir / "console.log",
        workdir / "answers.txt",
        workdir / "qemu.err",
    )
    for f in (console, answers, stderr):
        f.write_bytes(b"")
    cmd = [
        qemu,
        "-nodefaults",
        "-no-reboot",
        "-display", "none",
        "-m", "512",
        "-smp", "1",
        "-accel", accel,
        "-cpu", "host" if accel == "kvm" else "max",
        "-kernel", str(kernel.image),
        "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1 rdinit=/init",
        "-serial", f"file:{console}",
        "-serial", f"file:{answers}",
    ]  # fmt: skip
    start = time.monotonic()
    with stderr.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        timed_out = False
        while proc.poll() is None:
            elapsed = time.monotonic() - start
            if accel == "kvm":
                text = stderr.read_text(errors="replace") + console.read_text(errors="replace")
                stuck = elapsed > KVM_GIVE_UP and "@dmas" not in answers.read_text(errors="replace")
                if stuck or any(s in text for s in _KVM_FAILURES):
                    proc.kill()
                    proc.wait()
                    break
            if elapsed > timeout:
                proc.kill()
                proc.wait()
                timed_out = True
                break
            time.sleep(0.2)
    seconds = time.monotonic() - start
    return (
        answers.read_text(errors="replace"),
        console.read_text(errors="replace"),
        stderr.read_text(errors="replace"),
        seconds,
        timed_out,
    )


def run_in_vm(
    script: Script,
    kernel: PreparedKernel,
    cache: Path,
    *,
    timeout: float = 300,
    accel: str = "auto",
    console_log: Path | None = None,
) -> VmRun:
    """Boot ``kernel``, run ``script`` in it, and collect the answers.

    Raises :class:`~.interp.ToolMissing` when QEMU or gcc is missing and
    :class:`VmError` when the run does not reach the end of the script (the
    message names the console log, which has the kernel's side of the story).
    """
    if accel not in ("auto", "kvm", "tcg"):
        raise ValueError(f"accel must be auto, kvm or tcg, not {accel!r}")
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise ToolMissing(
            f"{QEMU} is not installed: the real-kernel side needs QEMU"
            " (Debian: apt-get install qemu-system-x86)"
        )
    if not kernel.image.is_file():
        raise ToolMissing(
            f"kernel image {kernel.image} is missing (clear the cache entry and fetch again)"
        )
    interp = build_interpreter(cache)
    runs = cache / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    log = (
        console_log or runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{kernel.release}-{script.name}.log"
    )
    notes: list[str] = []
    order = (
        ["kvm", "tcg"]
        if accel == "auto" and _kvm_usable()
        else ["tcg" if accel == "auto" else accel]
    )
    with tempfile.TemporaryDirectory(dir=runs) as tmp:
        work = Path(tmp)
        initrd = work / "initrd.cpio"
        initrd.write_bytes(_initramfs(interp, kernel, script))
        for i, mode in enumerate(order):
            text, console, err, seconds, timed_out = _boot(
                qemu, kernel, initrd, mode, work, timeout
            )
            answers = parse_answers(text)
            kvm_failed = mode == "kvm" and not answers.header and not timed_out
            if kvm_failed and i + 1 < len(order):
                reason = next((s for s in _KVM_FAILURES if s in err + console), "no answer")
                notes.append(f"KVM could not run the guest ({reason.strip()}); used TCG")
                continue
            break
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(console + ("\n--- qemu ---\n" + err if err.strip() else ""))
    run = VmRun(answers, log, mode, seconds, notes)
    if answers.error:
        raise VmError(f"the interpreter refused the script: {answers.error} (console log: {log})")
    if not answers.header:
        why = f"within {timeout:.0f} s" if timed_out else "before powering off"
        raise VmError(f"the kernel never started the interpreter {why} (console log: {log})")
    if timed_out:
        run.problem = (
            f"the VM did not finish within {timeout:.0f} s (raise --timeout; console log: {log})"
        )
    elif not answers.ended:
        done = len(answers.by_line)
        run.problem = (
            f"the VM stopped after {done} of {len(script.statements)} statements"
            f" (a panic? console log: {log})"
        )
    return run
