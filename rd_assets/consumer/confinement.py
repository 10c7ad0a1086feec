"""What a factor process does to itself before it runs a byte of factor code: limits, Landlock, no capabilities,
a seccomp filter. Linux only; stdlib and ctypes only (it runs inside the sandbox, before anything else is trusted).

Why each layer:

* ``RLIMIT_AS`` / ``RLIMIT_CPU`` / ``RLIMIT_FSIZE`` / ``RLIMIT_NOFILE`` / ``RLIMIT_CORE``: memory, CPU time, the size
  of any file it writes, descriptors, no core dumps (the same limits :mod:`rd_assets.core.isolation` sets).
* Landlock (Linux >= 5.13): every file-system right is handled; the factor's cwd gets all of them, the interpreter's
  own directories and a few system files are read-only, and nothing else is reachable, so it can neither write
  outside its cwd nor read the user's home, other bundles or the data of other factors. Landlock also keeps it from
  ptrace-ing or (ABI 6) signalling processes outside its domain.
* Capabilities: the process may start as root (the network namespace needs it); every capability is dropped,
  including the bounding set, and ``no_new_privs`` is set, so nothing it runs can gain one back.
* seccomp: no new process or thread (``clone``, ``fork``, ``execve`` ...), no socket of any family (a network
  namespace does not cover UNIX sockets such as ``/var/run/docker.sock``) and no io_uring (its operations bypass a
  syscall filter). Syscalls of another ABI (x32, i386) are refused as well.

Landlock and seccomp bind the calling thread and its future children; the caller checks that it is the process's
only thread first (:func:`only_thread`), so no earlier thread escapes them.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import site
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass

_libc = ctypes.CDLL(None, use_errno=True)

PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_DUMPABLE = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15
FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
"""Every file-system right each Landlock ABI knows (ABI 2 adds REFER, 3 TRUNCATE, 5 IOCTL_DEV)."""
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
"""The only rights a rule on a single file (not a directory) may carry."""
READ_ONLY = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
EPERM = 1
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x06
_X32_SYSCALL_BIT = 0x40000000


@dataclass(frozen=True)
class _Arch:
    audit: int
    seccomp: int
    capset: int
    denied: dict[str, int]


_IO_URING = {"io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}
_ARCHES = {
    "x86_64": _Arch(
        audit=0xC000003E,
        seccomp=317,
        capset=126,
        denied={"clone": 56, "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "clone3": 435, "socket": 41}
        | _IO_URING,
    ),
    "aarch64": _Arch(
        audit=0xC00000B7,
        seccomp=277,
        capset=91,
        denied={"clone": 220, "execve": 221, "execveat": 281, "clone3": 435, "socket": 198} | _IO_URING,
    ),
}

READABLE_SYSTEM_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/sys/devices/system/cpu")
READABLE_SYSTEM_FILES = (
    "/etc/ld.so.cache", "/etc/localtime", "/proc/cpuinfo", "/proc/meminfo", "/dev/urandom", "/dev/zero",
)  # fmt: skip


class ConfinementError(OSError):
    """A layer could not be applied; the caller refuses to run the factor (or records it when told to go on)."""


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpu_seconds: int
    file_mb: int
    open_files: int


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise ConfinementError(errno, f"{what}: {os.strerror(errno)}")
    return result


def _vm_size() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise ConfinementError(0, "VmSize not found in /proc/self/status")


def apply_limits(limits: Limits) -> None:
    """Address space on top of what is mapped now, CPU seconds on top of those used, and the other limits.

    CPU: soft = hard, so the kernel ends the process with SIGKILL at the limit (a PID-namespace init ignores the
    SIGXCPU a softer limit would send first).
    """
    budget = _vm_size() + limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (budget, budget))
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime) + 1 + limits.cpu_seconds
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    size = limits.file_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def only_thread() -> bool:
    """True when this process has one thread (Landlock binds only the calling thread)."""
    return len(os.listdir("/proc/self/task")) == 1


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is unavailable or disabled."""
    result = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION)
    return max(int(result), 0)


class _RulesetAttr(ctypes.Structure):
    _fields_ = (("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64))  # fmt: skip


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def readable_paths() -> list[str]:
    """The interpreter's own directories (stdlib, site-packages, prefixes) and the system library directories."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
    paths |= {p for key, p in sysconfig.get_paths().items() if key in ("stdlib", "platstdlib", "purelib", "platlib")}
    return sorted({os.path.realpath(p) for p in paths} | set(READABLE_SYSTEM_DIRS))


def _add_rule(ruleset: int, path: str, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path that does not exist here needs no rule
    try:
        if not os.path.isdir(path):
            access &= FILE_RIGHTS
        rule = _PathBeneath(allowed_access=access, parent_fd=fd)
        _check(
            _libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0),
            f"landlock_add_rule {path}",
        )
    finally:
        os.close(fd)


def apply_landlock(workdir: str, readable: Iterable[str]) -> int:
    """Everything is denied but: all rights under ``workdir``, read/execute under ``readable``; returns the ABI."""
    abi = landlock_abi()
    if abi < 1:
        raise ConfinementError(0, "Landlock is not available in this kernel (Linux >= 5.13 with Landlock enabled)")
    handled = FS_RIGHTS_BY_ABI.get(abi, FS_RIGHTS_BY_ABI[5])
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attr = _RulesetAttr(handled_access_fs=handled, scoped=scoped)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else ctypes.sizeof(ctypes.c_uint64)
    ruleset = _check(_libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0), "landlock ruleset")
    try:
        _add_rule(ruleset, workdir, handled)
        for path in readable:
            _add_rule(ruleset, path, READ_ONLY & handled)
        for path in READABLE_SYSTEM_FILES:
            _add_rule(ruleset, path, FS_READ_FILE)
        _add_rule(ruleset, "/dev/null", FS_READ_FILE | FS_WRITE_FILE)
        # its own /proc entry as the mounted procfs names it (inside a PID namespace getpid() is another number)
        _add_rule(ruleset, os.path.realpath("/proc/self"), FS_READ_FILE | FS_READ_DIR)
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
        _check(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32))


def _arch() -> _Arch:
    arch = _ARCHES.get(platform.machine())
    if arch is None:
        raise ConfinementError(0, f"no seccomp filter for this machine ({platform.machine()})")
    return arch


def drop_capabilities() -> None:
    """No capability now or after any exec: bounding set, ambient set and the three sets of this thread emptied."""
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as fh:
        last = int(fh.read())
    for cap in range(last + 1):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 and ctypes.get_errno() != EPERM:
            _check(-1, f"drop capability {cap} from the bounding set")
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(version=_LINUX_CAPABILITY_VERSION_3, pid=0)
    data = (_CapData * 2)()
    _check(_libc.syscall(_arch().capset, ctypes.byref(header), ctypes.byref(data)), "capset")
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if effective_capabilities() != 0:
        raise ConfinementError(0, "capabilities remain after dropping them")


def effective_capabilities() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return -1


class _SockFilter(ctypes.Structure):
    _fields_ = (("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32))


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


def _filter_program(arch: _Arch) -> list[tuple[int, int, int, int]]:
    """BPF: another ABI -> EPERM; x32 numbers -> EPERM; a denied syscall -> EPERM; anything else allowed."""
    deny = SECCOMP_RET_ERRNO | EPERM
    numbers = sorted(arch.denied.values())
    program = [(_BPF_LD_W_ABS, 0, 0, 4), (_BPF_JEQ_K, 1, 0, arch.audit), (_BPF_RET_K, 0, 0, deny)]
    program.append((_BPF_LD_W_ABS, 0, 0, 0))
    program.append((_BPF_JGE_K, len(numbers) + 1, 0, _X32_SYSCALL_BIT))
    for i, nr in enumerate(numbers):
        program.append((_BPF_JEQ_K, len(numbers) - i, 0, nr))
    program += [(_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW), (_BPF_RET_K, 0, 0, deny)]
    return program


def apply_seccomp() -> list[str]:
    """Install the filter for every thread (TSYNC); returns the names of the refused syscalls."""
    arch = _arch()
    program = _filter_program(arch)
    filters = (_SockFilter * len(program))(*(_SockFilter(*ins) for ins in program))
    prog = _SockFprog(len(program), filters)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(
        _libc.syscall(arch.seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(prog)),
        "seccomp",
    )
    return sorted(arch.denied)
