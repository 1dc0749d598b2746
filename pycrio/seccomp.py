"""linux.seccomp sections for containers: pycrio's RuntimeDefault profile and Localhost profiles.

The OCI runtime spec's linux.seccomp object is {defaultAction, defaultErrnoRet,
architectures, flags, syscalls: [{names, action, errnoRet, args: [{index, value,
valueTwo, op}]}]}; runc hands it to libseccomp and skips syscall names its
libseccomp does not know, so listing newer or arch-specific names is harmless.

The default profile is an allowlist (anything unlisted fails with EPERM). The
OCI format has no capability conditions, so the profile is built per container:
syscalls gated by a capability are only allowed when the container's effective
set holds it (CAP_SYS_ADMIN opens mount, sethostname, namespace creation ...).
Privileged containers get no filter at all; the caller decides that.
"""

from __future__ import annotations

import json
import os
import platform
import posixpath
import stat
from collections.abc import Iterable
from typing import Any

from pycrio.errors import InvalidArgument

EPERM = 1
ENOSYS = 38
MAX_PROFILE_BYTES = 1 << 20

ACTIONS = frozenset(
    {
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    }
)
OPERATORS = frozenset(
    {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"}
)
_SYSCALL_KEYS = frozenset({"names", "action", "errnoRet", "args"})
_ARG_KEYS = frozenset({"index", "value", "valueTwo", "op"})

# clone/unshare flags that create a namespace: CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
# personality(2) values that only change uname or address-space quirks, plus 0xffffffff (query).
SAFE_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

# Syscalls every container may make.
ALLOWED = [
    "accept",
    "accept4",
    "access",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kcmp",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_getfd",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_madvise",
    "process_mrelease",
    "process_vm_readv",
    "process_vm_writev",
    "pselect6",
    "pselect6_time64",
    "ptrace",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
]

# Syscalls a capability unlocks (the kernel still checks the capability itself).
BY_CAPABILITY: dict[str, list[str]] = {
    "CAP_SYS_ADMIN": [
        "mount",
        "umount",
        "umount2",
        "sethostname",
        "setdomainname",
        "setns",
        "unshare",
        "clone",
        "clone3",
        "pivot_root",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "move_mount",
        "open_tree",
        "mount_setattr",
        "quotactl",
        "quotactl_fd",
        "lookup_dcookie",
        "bpf",
        "perf_event_open",
        "fanotify_init",
        "syslog",
    ],
    "CAP_SYS_TIME": [
        "settimeofday",
        "stime",
        "clock_settime",
        "clock_settime64",
        "adjtimex",
        "clock_adjtime",
        "clock_adjtime64",
    ],
    "CAP_SYS_MODULE": ["init_module", "finit_module", "delete_module"],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_DAC_READ_SEARCH": ["open_by_handle_at"],
}

ARCHITECTURES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}


def host_architectures(machine: str | None = None) -> list[str]:
    return list(ARCHITECTURES.get(machine or platform.machine(), []))


def _rule(names: Iterable[str], action: str = "SCMP_ACT_ALLOW", **extra: Any) -> dict[str, Any]:
    return {"names": sorted(set(names)), "action": action, **extra}


def default_profile(effective_caps: Iterable[str], machine: str | None = None) -> dict[str, Any]:
    """pycrio's RuntimeDefault profile for a container holding `effective_caps` ("CAP_X" names)."""
    held = set(effective_caps)
    allowed = set(ALLOWED)
    for cap, names in BY_CAPABILITY.items():
        if cap in held:
            allowed.update(names)
    syscalls = [_rule(allowed)]
    for value in SAFE_PERSONALITIES:
        syscalls.append(_rule(["personality"], args=[{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]))
    if "CAP_SYS_ADMIN" not in held:
        # clone and unshare without namespace-creating flags; clone3 passes its flags in memory
        # seccomp cannot read, so it reports ENOSYS and libcs fall back to clone.
        no_ns = [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
        syscalls.append(_rule(["clone", "unshare"], args=no_ns))
        syscalls.append(_rule(["clone3"], "SCMP_ACT_ERRNO", errnoRet=ENOSYS))
    profile: dict[str, Any] = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": EPERM}
    arches = host_architectures(machine)
    if arches:
        profile["architectures"] = arches
    profile["syscalls"] = syscalls
    return profile


# ---------------------------------------------------------------- Localhost profiles


def read_localhost_profile(path: str, effective_caps: Iterable[str], roots: Iterable[str] = ()) -> dict[str, Any]:
    """Load a Localhost profile (OCI linux.seccomp, or the Docker-style format) as an OCI section.

    With roots (the config's seccomp_profile_roots), the profile must lie under one of them
    once symlinks are resolved on both sides."""
    if not path or not posixpath.isabs(path):
        raise InvalidArgument(f"seccomp profile {path!r}: must be an absolute path")
    if ".." in path.split("/") or "\0" in path:
        raise InvalidArgument(f"seccomp profile {path!r}: must not contain '..' or NUL")
    roots = list(roots)
    if roots:
        real = os.path.realpath(path)
        if not any(real.startswith(os.path.realpath(root).rstrip("/") + "/") for root in roots):
            where = path if real == path else f"{path} (resolved: {real})"
            raise InvalidArgument(
                f"seccomp profile {where}: outside the allowed profile directories ({', '.join(roots)}; "
                "seccomp_profile_roots in [pycrio.runtime])"
            )
        path = real  # what was checked is what is opened (O_NOFOLLOW: no symlink swapped in since)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_NOFOLLOW if roots else 0))
    except OSError as e:
        raise InvalidArgument(f"seccomp profile {path!r}: cannot open: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"seccomp profile {path!r}: not a regular file")
        if st.st_size > MAX_PROFILE_BYTES:
            raise InvalidArgument(f"seccomp profile {path!r}: larger than {MAX_PROFILE_BYTES} bytes")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_PROFILE_BYTES:
        raise InvalidArgument(f"seccomp profile {path!r}: larger than {MAX_PROFILE_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"seccomp profile {path!r}: invalid JSON: {e}") from None
    return convert_profile(doc, effective_caps, where=path)


def convert_profile(doc: Any, effective_caps: Iterable[str], where: str = "profile") -> dict[str, Any]:
    """Validate a profile and turn it into an OCI linux.seccomp object.

    Docker-style extras are translated: "archMap" becomes "architectures", a rule's
    singular "name" becomes "names", and "includes"/"excludes" capability conditions
    are evaluated against the container's effective capabilities (other conditions,
    like kernel or arch, are ignored: such a rule is kept)."""

    def bad(msg: str) -> InvalidArgument:
        return InvalidArgument(f"seccomp profile {where!r}: {msg}")

    if not isinstance(doc, dict):
        raise bad("must be a JSON object")
    held = set(effective_caps)
    action = doc.get("defaultAction")
    if action not in ACTIONS:
        raise bad(f"defaultAction {action!r}: not a known action")
    out: dict[str, Any] = {"defaultAction": action}
    if "defaultErrnoRet" in doc:
        out["defaultErrnoRet"] = _uint(doc["defaultErrnoRet"], "defaultErrnoRet", bad)
    arches = doc.get("architectures")
    if arches is None and isinstance(doc.get("archMap"), list):
        arches = []
        for entry in doc["archMap"]:
            if not isinstance(entry, dict):
                raise bad("archMap entries must be objects")
            arches.append(entry.get("architecture"))
            arches.extend(entry.get("subArchitectures") or [])
    if arches is not None:
        if not isinstance(arches, list) or not all(isinstance(a, str) and a.startswith("SCMP_ARCH_") for a in arches):
            raise bad("architectures must be a list of SCMP_ARCH_ names")
        out["architectures"] = list(dict.fromkeys(arches))
    if "flags" in doc:
        flags = doc["flags"]
        if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
            raise bad("flags must be a list of strings")
        out["flags"] = list(flags)
    rules = doc.get("syscalls", [])
    if not isinstance(rules, list):
        raise bad("syscalls must be a list")
    out["syscalls"] = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise bad(f"syscalls[{i}] must be an object")
        if not _caps_apply(rule, held, bad):
            continue
        names = rule.get("names")
        if names is None and "name" in rule:
            names = [rule["name"]]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise bad(f"syscalls[{i}].names must be a non-empty list of names")
        if rule.get("action") not in ACTIONS:
            raise bad(f"syscalls[{i}].action {rule.get('action')!r}: not a known action")
        converted: dict[str, Any] = {"names": list(names), "action": rule["action"]}
        if "errnoRet" in rule:
            converted["errnoRet"] = _uint(rule["errnoRet"], f"syscalls[{i}].errnoRet", bad)
        if rule.get("args"):
            converted["args"] = [_arg(a, f"syscalls[{i}].args", bad) for a in rule["args"]]
        out["syscalls"].append(converted)
    return out


def _uint(value: Any, what: str, bad: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 1 << 64:
        raise bad(f"{what} must be an unsigned integer")
    return value


def _arg(arg: Any, what: str, bad: Any) -> dict[str, Any]:
    if not isinstance(arg, dict) or arg.get("op") not in OPERATORS:
        raise bad(f"{what}: each needs an op among {sorted(OPERATORS)}")
    index = _uint(arg.get("index"), f"{what}.index", bad)
    if index > 5:
        raise bad(f"{what}.index must be 0..5")
    out = {"index": index, "value": _uint(arg.get("value", 0), f"{what}.value", bad), "op": arg["op"]}
    if "valueTwo" in arg:
        out["valueTwo"] = _uint(arg["valueTwo"], f"{what}.valueTwo", bad)
    return out


def _caps_apply(rule: dict[str, Any], held: set[str], bad: Any) -> bool:
    """Docker-style includes.caps (all needed) / excludes.caps (none allowed)."""
    for key, want in (("includes", True), ("excludes", False)):
        cond = rule.get(key)
        if cond is None:
            continue
        if not isinstance(cond, dict):
            raise bad(f"{key} must be an object")
        caps = cond.get("caps") or []
        if not isinstance(caps, list):
            raise bad(f"{key}.caps must be a list")
        wanted = {c if c.startswith("CAP_") else f"CAP_{c}" for c in caps if isinstance(c, str)}
        if want and not wanted <= held:
            return False
        if not want and wanted & held:
            return False
    return True
