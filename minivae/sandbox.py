"""Limits for running a student's code: memory, CPU and output, and no new processes.

The grader runs each task of a submission in a child process that calls
:func:`confine` before it imports any student code. From then on the process

* may hold at most ``memory`` bytes of address space (a huge allocation raises
  MemoryError), use ``seconds`` + 1 s of CPU, and grow no file beyond ``output``
  bytes (a flood of printing ends the process);
* cannot start a process or a program, change its limits, trace or signal
  another process: on Linux (x86-64, aarch64) a seccomp filter makes fork,
  exec, setrlimit, ptrace and kill of another process fail with EPERM. Threads
  stay allowed (the BLAS uses them). A fork loop therefore fails at its first
  fork, and nothing the student starts can outlive the grading.

The parent adds the wall-clock limit (:func:`run`) and kills the child's process
group when it is over. What this does not do: restrict which files the code
reads or writes: it can read whatever the grading user can, the reference
solution included (the Gradescope bundle runs as that image's root). Grade
where nothing else of value is readable and accept that a determined student
could copy the reference. This module uses the standard library only: the
grader loads it by path inside the child, before anything else.
"""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import signal
import struct
import subprocess
import sys
import time
from typing import NamedTuple

__all__ = ["Limits", "Outcome", "confine", "run", "GUARD_ACTIVE"]

#: set by :func:`confine`: whether the seccomp filter could be installed here
GUARD_ACTIVE = False


class Limits(NamedTuple):
    seconds: float = 60.0       # wall clock, enforced by the parent; CPU time, seconds + 1
    memory: int = 2 << 30       # bytes of address space
    output: int = 8 << 20       # bytes one file may grow to (stdout and stderr included)


class Outcome(NamedTuple):
    returncode: int | None      # None when the wall-clock limit killed it
    seconds: float
    stdout: str                 # the first few KB of what it printed
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


# ---------------------------------------------------------------- the seccomp filter
# BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h)
_LD_W_ABS, _JEQ, _JSET, _RET = 0x20, 0x15, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_CLONE_THREAD = 0x00010000

#: per architecture: its AUDIT_ARCH value and the numbers of the system calls to refuse
_ARCH = {
    "x86_64": (0xC000003E, dict(fork=57, vfork=58, execve=59, execveat=322, clone=56, clone3=435,
                                setrlimit=160, prlimit64=302, ptrace=101, kill=62, tkill=200, tgkill=234)),
    "aarch64": (0xC00000B7, dict(execve=221, execveat=281, clone=220, clone3=435, setrlimit=164,
                                 prlimit64=261, ptrace=117, kill=129, tkill=130, tgkill=131)),
}


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def _filter(arch: int, nr: dict[str, int], pid: int) -> list[bytes]:
    """The BPF program: refuse process creation, exec, limit changes and ptrace; allow
    clone only for threads, kill and tgkill only towards this process; allow the rest."""
    eperm, enosys = _ERRNO | errno.EPERM, _ERRNO | errno.ENOSYS
    prog = [_ins(_LD_W_ABS, 0, 0, 4), _ins(_JEQ, 1, 0, arch), _ins(_RET, 0, 0, _ALLOW),  # other ABIs: allow
            _ins(_LD_W_ABS, 0, 0, 0)]                                                     # the call's number
    refused = {k: eperm for k in ("fork", "vfork", "execve", "execveat", "setrlimit", "prlimit64", "ptrace",
                                  "tkill")}
    refused["clone3"] = enosys  # glibc then falls back to clone, checked below
    for name, ret in refused.items():
        if name in nr:
            prog += [_ins(_JEQ, 0, 1, nr[name]), _ins(_RET, 0, 0, ret)]
    # clone: only with CLONE_THREAD in its flags (the first argument, at offset 16)
    prog += [_ins(_JEQ, 0, 3, nr["clone"]), _ins(_LD_W_ABS, 0, 0, 16), _ins(_JSET, 1, 0, _CLONE_THREAD),
             _ins(_RET, 0, 0, eperm)]
    # kill(pid, sig) and tgkill(tgid, tid, sig): only towards this process
    for name in ("kill", "tgkill"):
        prog += [_ins(_JEQ, 0, 3, nr[name]), _ins(_LD_W_ABS, 0, 0, 16), _ins(_JEQ, 1, 0, pid),
                 _ins(_RET, 0, 0, eperm)]
    return prog + [_ins(_RET, 0, 0, _ALLOW)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def _install_filter() -> bool:
    arch = _ARCH.get(platform.machine())
    if sys.platform != "linux" or arch is None:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prog = _filter(arch[0], arch[1], os.getpid())
        fprog = _SockFprog(len(prog), b"".join(prog))
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) == 0
    except (OSError, AttributeError):
        return False


def confine(limits: Limits) -> bool:
    """Limit this process (memory, CPU, file size) and forbid it new processes (see the
    module's docstring). Irreversible. Returns whether the seccomp filter is active."""
    global GUARD_ACTIVE
    cpu = max(1, int(limits.seconds) + 1)
    for which, value in ((resource.RLIMIT_AS, limits.memory), (resource.RLIMIT_CPU, cpu),
                         (resource.RLIMIT_FSIZE, limits.output), (resource.RLIMIT_CORE, 0)):
        hard = resource.getrlimit(which)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))
    GUARD_ACTIVE = _install_filter()
    return GUARD_ACTIVE


def _head(path: str, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(n).decode("utf-8", "replace")
    except OSError:
        return ""


def run(argv: list[str], cwd: str, limits: Limits, env: dict | None = None, log_dir: str | None = None) -> Outcome:
    """Run ``argv`` in its own process group with a wall-clock limit; the child is
    expected to call :func:`confine` itself. Its output goes to files in ``log_dir``
    (default ``cwd``), of which the first KB are returned."""
    log_dir = log_dir or cwd
    out_path, err_path = os.path.join(log_dir, "stdout.txt"), os.path.join(log_dir, "stderr.txt")
    start = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=limits.seconds)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its group
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
    return Outcome(code, time.perf_counter() - start, _head(out_path), _head(err_path))
