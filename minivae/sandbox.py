"""Limits for running a student's code: memory, CPU and output, no new processes, and the files it may open.

The grader runs each task of a submission in a child process that calls
:func:`confine` before it imports any student code. From then on the process

* may hold at most ``memory`` bytes of address space (a huge allocation raises
  MemoryError), use ``seconds`` + 1 s of CPU, and grow no file beyond ``output``
  bytes (a flood of printing ends the process);
* cannot start a process or a program, change its limits, trace, signal or read
  another process, open a socket or use io_uring: on Linux (x86-64, aarch64) a
  seccomp filter makes fork, exec, setrlimit, ptrace, kill of another process,
  sigqueue, pidfd calls, process_vm_readv, socket and io_uring_setup fail with
  EPERM, and every system call of another ABI (32-bit ``int 0x80``, x32) too.
  Threads stay allowed (the BLAS uses them). A fork loop therefore fails at its
  first fork, and nothing the student starts can outlive the grading;
* is not dumpable: no other process of the same user can read its memory;
* holds no capability (run by root, it is an ordinary user towards the system), and
  the filter refuses what a same-user process could still do to others or to files:
  change modes, owners, times or attributes of files, set priorities or CPUs of
  processes, have SIGIO sent to another process.

On Linux 5.13 and later (where the kernel offers Landlock), :func:`confine_files`
also limits what the process may open, for any user, root included: it reads only
below the folders it is given (the student's modules, the Python standard library,
NumPy) and writes only below its own folder. Site-packages, where an installed
reference solution lives, stay closed, and so does every other file on the machine:
the student's code cannot copy the reference solution. Where Landlock is missing
(:func:`files_confinable` is False) it reads whatever the grading user can.

The parent adds the wall-clock limit (:func:`run`) and kills the child's process
group when it is over. This module uses the standard library only: the grader loads
it by path inside the child, before anything else.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import resource
import signal
import struct
import subprocess
import sys
from typing import NamedTuple

__all__ = ["Limits", "Outcome", "confine", "confine_files", "files_confinable", "below", "run"]


class Limits(NamedTuple):
    seconds: float = 60.0       # wall clock, enforced by the parent; CPU time, seconds + 1
    memory: int = 2 << 30       # bytes of address space
    output: int = 8 << 20       # bytes one file may grow to (stdout and stderr included)


class Outcome(NamedTuple):
    returncode: int | None      # None when the wall-clock limit killed it
    stdout: str                 # the first few KB of what it printed
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


# ---------------------------------------------------------------- the seccomp filter
# BPF opcodes and seccomp return values (linux/filter.h, linux/seccomp.h)
_LD_W_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 4, 38, 22, 2
_CLONE_THREAD = 0x00010000

#: per architecture: its AUDIT_ARCH value and the numbers of the system calls to refuse
_ARCH = {
    "x86_64": (0xC000003E, dict(
        fork=57, vfork=58, execve=59, execveat=322, clone=56, clone3=435, setrlimit=160, prlimit64=302,
        ptrace=101, kill=62, tkill=200, tgkill=234, rt_sigqueueinfo=129, rt_tgsigqueueinfo=297,
        pidfd_open=434, pidfd_send_signal=424, pidfd_getfd=438, process_vm_readv=310, process_vm_writev=311,
        socket=41, socketpair=53, io_uring_setup=425, fcntl=72, perf_event_open=298,
        chmod=90, fchmod=91, fchmodat=268, fchmodat2=452, chown=92, fchown=93, lchown=94, fchownat=260,
        utime=132, utimes=235, utimensat=280, futimesat=261, setxattr=188, lsetxattr=189, fsetxattr=190,
        removexattr=197, lremovexattr=198, fremovexattr=199, setxattrat=463, removexattrat=466,
        setpriority=141, sched_setaffinity=203, sched_setscheduler=144, sched_setparam=142,
        sched_setattr=314, ioprio_set=251)),
    "aarch64": (0xC00000B7, dict(
        execve=221, execveat=281, clone=220, clone3=435, setrlimit=164, prlimit64=261,
        ptrace=117, kill=129, tkill=130, tgkill=131, rt_sigqueueinfo=138, rt_tgsigqueueinfo=240,
        pidfd_open=434, pidfd_send_signal=424, pidfd_getfd=438, process_vm_readv=270, process_vm_writev=271,
        socket=198, socketpair=199, io_uring_setup=425, fcntl=25, perf_event_open=241,
        fchmod=52, fchmodat=53, fchmodat2=452, fchown=55, fchownat=54,
        utimensat=88, setxattr=5, lsetxattr=6, fsetxattr=7, removexattr=14, lremovexattr=15,
        fremovexattr=16, setxattrat=463, removexattrat=466,
        setpriority=140, sched_setaffinity=122, sched_setscheduler=119, sched_setparam=118,
        sched_setattr=274, ioprio_set=30)),
}
#: refused outright (clone, clone3, kill, tgkill and fcntl are handled on their own): new
#: processes and programs, limits, other processes (tracing, memory, signals by any route,
#: priorities and CPUs), files' modes, owners, times and attributes (which Landlock leaves
#: open), sockets, io_uring and performance counters
_REFUSED = ("fork", "vfork", "execve", "execveat", "setrlimit", "prlimit64", "ptrace", "tkill", "rt_sigqueueinfo",
            "rt_tgsigqueueinfo", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "process_vm_readv",
            "process_vm_writev", "socket", "socketpair", "io_uring_setup", "perf_event_open",
            "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
            "utime", "utimes", "utimensat", "futimesat", "setxattr", "lsetxattr", "fsetxattr",
            "removexattr", "lremovexattr", "fremovexattr", "setxattrat", "removexattrat",
            "setpriority", "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr",
            "ioprio_set")
#: fcntl commands that would have the kernel signal another process (SIGIO to an owner)
_F_SETOWN, _F_SETSIG, _F_SETOWN_EX = 8, 10, 15
_X32_BIT = 0x40000000  # x86-64's x32 ABI: call numbers with this bit set


@functools.lru_cache(maxsize=None)
def _libc() -> ctypes.CDLL:
    """The C library, errno kept for ctypes.get_errno()."""
    return ctypes.CDLL(None, use_errno=True)


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def _filter(arch: int, nr: dict[str, int], pid: int) -> list[bytes]:
    """The BPF program: refuse every call of another ABI (32-bit ``int 0x80``, x32) and those
    of :data:`_REFUSED`; allow clone only for threads, kill and tgkill only towards this
    process, fcntl but for setting a SIGIO owner; allow the rest."""
    eperm, enosys = _ERRNO | errno.EPERM, _ERRNO | errno.ENOSYS
    prog = [_ins(_LD_W_ABS, 0, 0, 4), _ins(_JEQ, 1, 0, arch), _ins(_RET, 0, 0, eperm),  # other ABIs: refuse
            _ins(_LD_W_ABS, 0, 0, 0),                                                    # the call's number
            _ins(_JGE, 0, 1, _X32_BIT), _ins(_RET, 0, 0, eperm)]
    refused = {k: eperm for k in _REFUSED}
    refused["clone3"] = enosys  # glibc then falls back to clone, checked below
    for name, ret in refused.items():
        if name in nr:
            prog += [_ins(_JEQ, 0, 1, nr[name]), _ins(_RET, 0, 0, ret)]
    allow = _ins(_RET, 0, 0, _ALLOW)
    # clone: only with CLONE_THREAD in its flags (the first argument, at offset 16)
    prog += [_ins(_JEQ, 0, 4, nr["clone"]), _ins(_LD_W_ABS, 0, 0, 16), _ins(_JSET, 1, 0, _CLONE_THREAD),
             _ins(_RET, 0, 0, eperm), allow]
    # kill(pid, sig) and tgkill(tgid, tid, sig): only towards this process
    for name in ("kill", "tgkill"):
        prog += [_ins(_JEQ, 0, 4, nr[name]), _ins(_LD_W_ABS, 0, 0, 16), _ins(_JEQ, 1, 0, pid),
                 _ins(_RET, 0, 0, eperm), allow]
    # fcntl(fd, cmd, ...): no owner for SIGIO (the second argument, at offset 24)
    prog += [_ins(_JEQ, 0, 6, nr["fcntl"]), _ins(_LD_W_ABS, 0, 0, 24), _ins(_JEQ, 3, 0, _F_SETOWN),
             _ins(_JEQ, 2, 0, _F_SETSIG), _ins(_JEQ, 1, 0, _F_SETOWN_EX), allow, _ins(_RET, 0, 0, eperm)]
    return prog + [allow]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def _install_filter() -> bool:
    arch = _ARCH.get(platform.machine())
    if sys.platform != "linux" or arch is None:
        return False
    try:
        libc = _libc()
        prog = _filter(arch[0], arch[1], os.getpid())
        fprog = _SockFprog(len(prog), b"".join(prog))
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 or libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) == 0
    except (OSError, AttributeError):
        return False


# ---------------------------------------------------------------- Landlock (linux/landlock.h)
_LANDLOCK_CREATE_RULESET, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT_SELF = 444, 445, 446  # every architecture
_LANDLOCK_VERSION, _RULE_PATH_BENEATH = 1, 1
_FS_EXECUTE, _FS_WRITE_FILE, _FS_READ_FILE, _FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_MAKE_SYM, _FS_REFER, _FS_TRUNCATE = 1 << 12, 1 << 13, 1 << 14
_FS_ALL_V1 = (1 << 13) - 1           # execute ... make_sym: the rights of Landlock's first version
_FS_FILE = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE  # the rights a rule on a file may grant
_FS_WRITE = (_FS_ALL_V1 & ~_FS_EXECUTE & ~_FS_MAKE_SYM) | _FS_TRUNCATE  # all but execute and make_sym


def _syscall(*args) -> int:
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    return libc.syscall(*(ctypes.c_long(a) if isinstance(a, int) else a for a in args))


def _landlock_abi() -> int:
    """The kernel's Landlock version, 0 if it has none (or is not Linux)."""
    if sys.platform != "linux":
        return 0
    try:
        return max(0, _syscall(_LANDLOCK_CREATE_RULESET, None, 0, _LANDLOCK_VERSION))
    except (OSError, AttributeError):
        return 0


def files_confinable() -> bool:
    """Whether this kernel lets :func:`confine_files` limit what a process may open (Landlock)."""
    return _landlock_abi() >= 1


def below(roots: list[str], closed: list[str]) -> list[str]:
    """Folders and files that together hold everything below ``roots`` except what is below
    ``closed``: a root with a closed folder inside it is replaced by its entries, recursively."""
    closed = {os.path.realpath(c) for c in closed}
    found: list[str] = []

    def visit(path: str) -> None:
        real = os.path.realpath(path)
        if real in closed:
            return
        if not any(c.startswith(real.rstrip(os.sep) + os.sep) for c in closed) or not os.path.isdir(path):
            found.append(path)
            return
        for name in sorted(os.listdir(path)):
            visit(os.path.join(path, name))

    for root in roots:
        if os.path.exists(root):
            visit(root)
    return found


def confine_files(read: list[str], write: list[str]) -> bool:
    """From now on this process may read (and map as code) only files below the folders in
    ``read``, and create, write and delete only below those in ``write``; it makes no symbolic
    links. Irreversible. Files already open stay open. Returns whether the kernel applied it."""
    abi = _landlock_abi()
    if abi < 1:
        return False
    handled = _FS_ALL_V1 | (_FS_REFER if abi >= 2 else 0) | (_FS_TRUNCATE if abi >= 3 else 0)
    ruleset = _syscall(_LANDLOCK_CREATE_RULESET, ctypes.byref(ctypes.c_uint64(handled)), 8, 0)
    if ruleset < 0:
        return False
    try:
        for folders, rights in ((read, _FS_EXECUTE | _FS_READ_FILE | _FS_READ_DIR),
                                (write, _FS_READ_FILE | _FS_READ_DIR | _FS_WRITE)):
            for folder in folders:
                fd = os.open(folder, os.O_PATH | os.O_CLOEXEC)
                try:
                    allowed = rights & handled & (~0 if os.path.isdir(folder) else _FS_FILE)  # a file: file rights
                    rule = struct.pack("=Qi", allowed, fd)  # landlock_path_beneath_attr, packed
                    if _syscall(_LANDLOCK_ADD_RULE, ruleset, _RULE_PATH_BENEATH, rule, 0) != 0:
                        return False
                finally:
                    os.close(fd)
        if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return _syscall(_LANDLOCK_RESTRICT_SELF, ruleset, 0) == 0
    finally:
        os.close(ruleset)


_PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4
_CAPABILITY_VERSION_3 = 0x20080522


def _drop_capabilities() -> None:
    """Leave this process no capability, nor any way to regain one: run by root, it is then an
    ordinary user towards files it does not own and towards the system (no immutable flags,
    host name, mounts, reboot, ...)."""
    libc = _libc()
    for cap in range(64):  # the bounding set (a number past the last capability: EINVAL, ignored)
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = ctypes.create_string_buffer(struct.pack("=Ii", _CAPABILITY_VERSION_3, 0))  # this process
    data = ctypes.create_string_buffer(24)  # effective, permitted, inheritable: all 0, for both 32-bit halves
    libc.capset(header, data)


def confine(limits: Limits) -> bool:
    """Limit this process (memory, CPU, file size), drop its capabilities, make it non-dumpable
    and install the seccomp filter (see the module's docstring). Irreversible. Returns whether
    the filter is active."""
    cpu = max(1, int(limits.seconds) + 1)
    for which, value in ((resource.RLIMIT_AS, limits.memory), (resource.RLIMIT_CPU, cpu),
                         (resource.RLIMIT_FSIZE, limits.output), (resource.RLIMIT_CORE, 0)):
        hard = resource.getrlimit(which)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))
    if sys.platform == "linux":
        _drop_capabilities()
    return _install_filter()


def run(argv: list[str], cwd: str, limits: Limits, env: dict | None = None) -> Outcome:
    """Run ``argv`` in its own process group with a wall-clock limit; the child is expected to
    call :func:`confine` itself. Its output goes to files in ``cwd``, of which the first KB are
    returned, read back through this process's own descriptors, never by name: the child may
    have put links to other files in their place."""
    with open(os.path.join(cwd, "stdout.txt"), "w+b") as out, open(os.path.join(cwd, "stderr.txt"), "w+b") as err:
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
        return Outcome(code, *(os.pread(f.fileno(), 4000, 0).decode("utf-8", "replace") for f in (out, err)))
