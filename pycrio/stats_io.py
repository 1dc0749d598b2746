"""Block I/O counters of a cgroup per device and operation, as cAdvisor reports them.

cgroup v1 lists "major:minor Operation value" lines (blkio.throttle.io_service_bytes
and io_serviced, with a last "Total value" line for all devices); v2's io.stat has
one line per device, "major:minor rbytes=… wbytes=… rios=… wios=… dbytes=… dios=…",
of which cAdvisor (through runc) keeps reads and writes as the v1 operations "Read"
and "Write". Devices are named as cAdvisor names them: "/dev/" and the kernel's name
of the block device (/sys/dev/block/major:minor), "" when the device is unknown.
"""

from __future__ import annotations

import os

DeviceId = tuple[int, int]  # major, minor
BlockDevice = tuple[int, int, str]  # major, minor, name
RawIo = dict[DeviceId, dict[str, int]]  # device -> operation -> count
IoCounters = dict[BlockDevice, dict[str, int]]

SYS_DEV_BLOCK = "/sys/dev/block"
_V2_OPERATIONS = {"rbytes": (0, "Read"), "wbytes": (0, "Write"), "rios": (1, "Read"), "wios": (1, "Write")}


def _device_id(text: str) -> DeviceId | None:
    major, sep, minor = text.partition(":")
    try:
        return (int(major), int(minor)) if sep else None
    except ValueError:
        return None


def parse_blkio_v1(text: str) -> RawIo:
    """A v1 blkio.* rwstat file; the "Total" line and lines that do not parse are left out."""
    out: RawIo = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 3:
            continue
        device = _device_id(fields[0])
        try:
            value = int(fields[2])
        except ValueError:
            continue
        if device is not None:
            out.setdefault(device, {})[fields[1]] = value
    return out


def parse_io_stat(text: str) -> tuple[RawIo, RawIo]:
    """v2 io.stat as (bytes, operations) per device and "Read"/"Write"."""
    tables: tuple[RawIo, RawIo] = ({}, {})
    for line in text.splitlines():
        fields = line.split()
        device = _device_id(fields[0]) if fields else None
        if device is None:
            continue
        for field in fields[1:]:
            key, _, value = field.partition("=")
            if key not in _V2_OPERATIONS:
                continue
            try:
                number = int(value)
            except ValueError:
                continue
            table, operation = _V2_OPERATIONS[key]
            tables[table].setdefault(device, {})[operation] = number
    return tables


def device_name(major: int, minor: int, sys_dev_block: str = SYS_DEV_BLOCK) -> str:
    """ "/dev/<kernel name>" of a block device, "" when there is none."""
    try:
        target = os.readlink(os.path.join(sys_dev_block, f"{major}:{minor}"))
    except OSError:
        return ""
    return "/dev/" + os.path.basename(target)


def name_devices(*tables: RawIo, sys_dev_block: str = SYS_DEV_BLOCK) -> list[IoCounters]:
    """The tables keyed by (major, minor, name), each device looked up once."""
    names: dict[DeviceId, str] = {}
    out = []
    for table in tables:
        named: IoCounters = {}
        for (major, minor), operations in table.items():
            if (major, minor) not in names:
                names[major, minor] = device_name(major, minor, sys_dev_block)
            named[major, minor, names[major, minor]] = dict(operations)
        out.append(named)
    return out


def merge_io(tables: list[IoCounters]) -> IoCounters:
    """The sum of several cgroups' counters, device by device and operation by operation."""
    out: IoCounters = {}
    for table in tables:
        for device, operations in table.items():
            mine = out.setdefault(device, {})
            for operation, value in operations.items():
                mine[operation] = mine.get(operation, 0) + value
    return out
