"""Linux capabilities: the names the kernel knows, what the daemon holds, and a container's sets.

Names are spelled as the OCI runtime spec wants them ("CAP_NET_ADMIN"); the
CRI and the config may leave out the "CAP_" prefix and use any case.
"""

from __future__ import annotations

from collections.abc import Iterable

from pycrio.errors import InvalidArgument

# capabilities(7), by number (include/uapi/linux/capability.h).
CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
_NUMBER = {name: number for number, name in enumerate(CAPABILITIES)}

ALL = "ALL"  # the CRI's word for "every capability" in add/drop lists


def canonical(name: str, where: str = "capability") -> str:
    """Canonical name: "net_admin", "CAP_NET_ADMIN", "Net_Admin" → "CAP_NET_ADMIN"; InvalidArgument if unknown."""
    upper = name.strip().upper()
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in _NUMBER:
        raise InvalidArgument(f"{where}: unknown capability {name!r} (see capabilities(7); e.g. NET_ADMIN)")
    return full


def ordered(names: Iterable[str]) -> list[str]:
    """names in the kernel's numbering order (a stable, readable order for config.json)."""
    return sorted(set(names), key=_NUMBER.__getitem__)


def from_mask(mask: int) -> set[str]:
    """The names of the bits set in a capability mask; bits this table does not know are left out."""
    return {name for number, name in enumerate(CAPABILITIES) if mask >> number & 1}


def daemon_capabilities(status_path: str = "/proc/self/status") -> set[str]:
    """What this process can hand to a container: its bounding set ∩ its permitted set.

    A container asking for more (CAP_SYS_RESOURCE on a host that withholds it)
    makes the OCI runtime fail, so these are the most a container can get.
    """
    masks: dict[str, int] = {}
    with open(status_path, encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapBnd", "CapPrm"):
                masks[key] = int(value.strip(), 16)
    if set(masks) != {"CapBnd", "CapPrm"}:
        raise OSError(f"{status_path}: no CapBnd/CapPrm lines")
    return from_mask(masks["CapBnd"] & masks["CapPrm"])


def container_capabilities(
    defaults: Iterable[str],
    add: Iterable[str],
    drop: Iterable[str],
    held: set[str],
) -> list[str]:
    """The capability set of a non-privileged container, following Kubernetes' add/drop rules.

    Start from defaults (the config's; those the daemon lacks are left out);
    "ALL" in add starts from every held capability instead, "ALL" in drop from
    none (drop wins when both say ALL). Then each named add is added and each
    named drop removed, in that order, so add [ALL] + drop [CHOWN] is all but
    CHOWN and drop [ALL] + add [CHOWN] is only CHOWN. A named add the daemon
    does not hold is refused here, with a clear message, rather than by the
    OCI runtime at start.
    """
    add, drop = list(add), list(drop)
    add_names = [canonical(n, "add_capabilities") for n in add if n.strip().upper() != ALL]
    drop_names = [canonical(n, "drop_capabilities") for n in drop if n.strip().upper() != ALL]
    caps = {canonical(n, "runtime.default_capabilities") for n in defaults} & held
    if any(n.strip().upper() == ALL for n in add):
        caps = set(held)
    if any(n.strip().upper() == ALL for n in drop):
        caps = set()
    for name in add_names:
        if name not in held:
            raise InvalidArgument(
                f"add_capabilities: {name} cannot be granted: the pycrio daemon does not hold it on this host"
            )
        caps.add(name)
    caps.difference_update(drop_names)
    return ordered(caps)


def ambient_capabilities(names: Iterable[str], held: set[str]) -> list[str]:
    """add_ambient_capabilities, checked like named adds (no "ALL": the CRI does not define it there)."""
    out = []
    for n in names:
        name = canonical(n, "add_ambient_capabilities")
        if name not in held:
            raise InvalidArgument(
                f"add_ambient_capabilities: {name} cannot be granted: the pycrio daemon does not hold it on this host"
            )
        out.append(name)
    return ordered(out)
