"""caps: capability names, the daemon's capabilities, and Kubernetes' add/drop arithmetic."""

from __future__ import annotations

import pytest

from pycrio import caps
from pycrio.errors import InvalidArgument

HELD = frozenset(caps.CAPABILITIES) - {"CAP_SYS_RESOURCE"}
DEFAULTS = ["CHOWN", "KILL", "SETUID"]


@pytest.mark.parametrize(
    "name,expected",
    [
        ("CHOWN", "CAP_CHOWN"),
        ("cap_chown", "CAP_CHOWN"),
        ("Net_Admin", "CAP_NET_ADMIN"),
        (" sys_admin ", "CAP_SYS_ADMIN"),
        ("CAP_CHECKPOINT_RESTORE", "CAP_CHECKPOINT_RESTORE"),
    ],
)
def test_canonical(name, expected):
    assert caps.canonical(name) == expected


@pytest.mark.parametrize("name", ["", "CAP_", "FLY", "CAP_ALL", "ALL", "CHOWN,KILL"])
def test_canonical_refuses_unknown(name):
    with pytest.raises(InvalidArgument, match="unknown capability"):
        caps.canonical(name)


def test_table_matches_the_kernel_numbering():
    assert caps.CAPABILITIES[0] == "CAP_CHOWN" and caps.CAPABILITIES[21] == "CAP_SYS_ADMIN"
    assert caps.CAPABILITIES[24] == "CAP_SYS_RESOURCE" and caps.CAPABILITIES[40] == "CAP_CHECKPOINT_RESTORE"
    assert len(set(caps.CAPABILITIES)) == len(caps.CAPABILITIES)


ARITHMETIC = [
    # (add, drop) -> capability set
    ([], [], {"CAP_CHOWN", "CAP_KILL", "CAP_SETUID"}),
    (["NET_ADMIN"], [], {"CAP_CHOWN", "CAP_KILL", "CAP_SETUID", "CAP_NET_ADMIN"}),
    ([], ["kill"], {"CAP_CHOWN", "CAP_SETUID"}),
    (["NET_RAW"], ["NET_RAW"], {"CAP_CHOWN", "CAP_KILL", "CAP_SETUID"}),  # drop applies after add
    (["ALL"], [], set(HELD)),
    (["all"], ["CHOWN"], set(HELD) - {"CAP_CHOWN"}),
    ([], ["ALL"], set()),
    (["CHOWN"], ["ALL"], {"CAP_CHOWN"}),
    (["NET_ADMIN", "SYS_TIME"], ["ALL"], {"CAP_NET_ADMIN", "CAP_SYS_TIME"}),
    (["ALL"], ["ALL"], set()),
    (["ALL", "KILL"], ["ALL"], {"CAP_KILL"}),
]


@pytest.mark.parametrize("add,drop,expected", ARITHMETIC)
def test_add_drop_arithmetic(add, drop, expected):
    out = caps.container_capabilities(DEFAULTS, add, drop, set(HELD))
    assert out == caps.ordered(expected)


def test_result_is_in_kernel_order():
    out = caps.container_capabilities(["KILL", "CHOWN", "SYS_ADMIN", "AUDIT_WRITE"], [], [], set(HELD))
    assert out == ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN", "CAP_AUDIT_WRITE"]


def test_defaults_the_daemon_lacks_are_left_out():
    out = caps.container_capabilities(["CHOWN", "SYS_RESOURCE"], [], [], set(HELD))
    assert out == ["CAP_CHOWN"]


def test_add_all_means_what_the_daemon_holds():
    held = {"CAP_CHOWN", "CAP_NET_RAW"}
    assert caps.container_capabilities(DEFAULTS, ["ALL"], [], held) == ["CAP_CHOWN", "CAP_NET_RAW"]


def test_adding_a_capability_the_daemon_lacks_is_refused():
    with pytest.raises(InvalidArgument, match="CAP_SYS_RESOURCE cannot be granted"):
        caps.container_capabilities(DEFAULTS, ["SYS_RESOURCE"], [], set(HELD))


@pytest.mark.parametrize("add,drop,where", [(["FLY"], [], "add_capabilities"), ([], ["FLY"], "drop_capabilities")])
def test_unknown_names_are_refused(add, drop, where):
    with pytest.raises(InvalidArgument, match=f"{where}: unknown capability 'FLY'"):
        caps.container_capabilities(DEFAULTS, add, drop, set(HELD))


def test_unknown_default_is_refused():
    with pytest.raises(InvalidArgument, match="runtime.default_capabilities"):
        caps.container_capabilities(["CHOWN", "NOPE"], [], [], set(HELD))


def test_ambient():
    assert caps.ambient_capabilities(["net_raw", "CAP_CHOWN"], set(HELD)) == ["CAP_CHOWN", "CAP_NET_RAW"]
    with pytest.raises(InvalidArgument, match="add_ambient_capabilities"):
        caps.ambient_capabilities(["ALL"], set(HELD))
    with pytest.raises(InvalidArgument, match="cannot be granted"):
        caps.ambient_capabilities(["SYS_RESOURCE"], set(HELD))


def test_daemon_capabilities_is_bounding_and_permitted(tmp_path):
    status = tmp_path / "status"
    # bounding: CHOWN, KILL, SYS_ADMIN, bit 50 (unknown); permitted: CHOWN, SYS_ADMIN, NET_RAW
    bnd = (1 << 0) | (1 << 5) | (1 << 21) | (1 << 50)
    prm = (1 << 0) | (1 << 21) | (1 << 13) | (1 << 50)
    status.write_text(f"Name:\tx\nCapInh:\t0\nCapPrm:\t{prm:016x}\nCapEff:\t0\nCapBnd:\t{bnd:016x}\nCapAmb:\t0\n")
    assert caps.daemon_capabilities(str(status)) == {"CAP_CHOWN", "CAP_SYS_ADMIN"}
    status.write_text("Name:\tx\n")
    with pytest.raises(OSError, match="CapBnd"):
        caps.daemon_capabilities(str(status))


def test_daemon_capabilities_of_this_process():
    held = caps.daemon_capabilities()
    with open("/proc/self/status") as f:
        lines = dict(line.split(":", 1) for line in f)
    mask = int(lines["CapBnd"], 16) & int(lines["CapPrm"], 16)
    assert held == caps.from_mask(mask)
    assert held <= set(caps.CAPABILITIES)
