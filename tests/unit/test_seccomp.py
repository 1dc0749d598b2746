"""pycrio.seccomp: the RuntimeDefault profile and Localhost profile loading."""

from __future__ import annotations

import json
import os

import pytest

from pycrio import seccomp
from pycrio.errors import InvalidArgument
from tests.support.spec_facts import check_seccomp_shape


def allowed_unconditionally(profile):
    return {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r for n in r["names"]}


def rules_for(profile, name):
    return [r for r in profile["syscalls"] if name in r["names"]]


DANGEROUS = [
    "mount",
    "umount2",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "reboot",
    "swapon",
    "swapoff",
    "setns",
    "unshare",
    "clone",
    "clone3",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "open_by_handle_at",
    "iopl",
    "ioperm",
    "acct",
    "settimeofday",
    "clock_settime",
    "pivot_root",
    "quotactl",
    "lookup_dcookie",
    "personality",
    "sethostname",
    "setdomainname",
    "io_uring_setup",
]


@pytest.mark.parametrize(
    "machine, arches",
    [
        ("x86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
    ],
)
def test_default_profile_shape(machine, arches):
    p = seccomp.default_profile([], machine=machine)
    check_seccomp_shape(p)
    assert p["defaultAction"] == "SCMP_ACT_ERRNO" and p["defaultErrnoRet"] == 1
    assert p["architectures"] == arches
    json.dumps(p)


def test_default_profile_allows_ordinary_and_blocks_dangerous_calls():
    p = seccomp.default_profile(["CAP_CHOWN", "CAP_NET_BIND_SERVICE"], machine="x86_64")
    allowed = allowed_unconditionally(p)
    assert {"read", "write", "openat", "execve", "mmap", "futex", "epoll_wait", "socket", "exit_group"} <= allowed
    assert not allowed & set(DANGEROUS)


def test_clone_and_unshare_only_without_namespace_flags():
    p = seccomp.default_profile([], machine="x86_64")
    (rule,) = rules_for(p, "clone")
    assert rule["names"] == ["clone", "unshare"]
    (arg,) = rule["args"]
    assert arg == {"index": 0, "value": seccomp.CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    assert seccomp.CLONE_NAMESPACE_FLAGS & 0x10000000  # CLONE_NEWUSER
    assert not seccomp.CLONE_NAMESPACE_FLAGS & 0x00000100  # CLONE_VM: threads must work
    (clone3,) = rules_for(p, "clone3")
    assert clone3["action"] == "SCMP_ACT_ERRNO" and clone3["errnoRet"] == seccomp.ENOSYS


def test_personality_only_with_safe_values():
    p = seccomp.default_profile([], machine="x86_64")
    values = sorted(r["args"][0]["value"] for r in rules_for(p, "personality"))
    assert values == sorted(seccomp.SAFE_PERSONALITIES)
    assert all(r["args"][0]["op"] == "SCMP_CMP_EQ" for r in rules_for(p, "personality"))


def test_sys_admin_opens_its_calls():
    p = seccomp.default_profile(["CAP_SYS_ADMIN"], machine="x86_64")
    allowed = allowed_unconditionally(p)
    assert {"mount", "umount2", "sethostname", "setdomainname", "unshare", "setns", "clone", "clone3"} <= allowed
    assert not rules_for(p, "clone3")[0].get("errnoRet")
    assert {"kexec_load", "init_module", "reboot", "keyctl", "userfaultfd"}.isdisjoint(allowed)


def test_other_capabilities_open_their_calls():
    allowed = allowed_unconditionally(seccomp.default_profile(["CAP_SYS_TIME", "CAP_SYS_BOOT"], machine="x86_64"))
    assert {"settimeofday", "clock_settime", "reboot"} <= allowed
    assert "mount" not in allowed


def write(tmp_path, doc, name="p.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_localhost_oci_profile_round_trips(tmp_path):
    doc = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"},
            {
                "names": ["kill"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 13,
                "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}],
            },
        ],
    }
    out = seccomp.read_localhost_profile(write(tmp_path, doc), [])
    check_seccomp_shape(out)
    assert out == doc


def test_localhost_docker_style_profile_is_converted(tmp_path):
    doc = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
        "syscalls": [
            {"name": "read", "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["chown"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}, "comment": "x"},
        ],
    }
    path = write(tmp_path, doc)
    plain = seccomp.read_localhost_profile(path, [])
    check_seccomp_shape(plain)
    assert plain["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert [r["names"] for r in plain["syscalls"]] == [["read"], ["chown"]]
    admin = seccomp.read_localhost_profile(path, ["CAP_SYS_ADMIN"])
    assert [r["names"] for r in admin["syscalls"]] == [["read"], ["mount"]]


def test_localhost_missing_file_names_the_path(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(InvalidArgument, match="nope.json"):
        seccomp.read_localhost_profile(path, [])


def test_localhost_profile_roots(tmp_path):
    root, outside = tmp_path / "profiles", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    doc = {"defaultAction": "SCMP_ACT_ALLOW"}
    inside = write(root, doc)
    (root / "sub").mkdir()
    nested = write(root / "sub", doc)
    stray = write(outside, doc)
    (root / "escape.json").symlink_to(stray)  # inside by name, outside once resolved
    (tmp_path / "via-link").symlink_to(root)  # outside by name, inside once resolved
    roots = [str(root)]
    assert seccomp.read_localhost_profile(inside, [], roots)["defaultAction"] == "SCMP_ACT_ALLOW"
    assert seccomp.read_localhost_profile(nested, [], roots)["defaultAction"] == "SCMP_ACT_ALLOW"
    assert seccomp.read_localhost_profile(str(tmp_path / "via-link" / "p.json"), [], roots)
    for bad in (stray, str(root / "escape.json"), str(tmp_path / "profilesX.json")):
        with pytest.raises(InvalidArgument, match="outside the allowed profile directories.*seccomp_profile_roots"):
            seccomp.read_localhost_profile(bad, [], roots)
    assert seccomp.read_localhost_profile(stray, [], [])  # no roots: any absolute path


@pytest.mark.parametrize("path", ["", "rel/p.json", "/etc/../etc/p.json"])
def test_localhost_bad_paths(path):
    with pytest.raises(InvalidArgument):
        seccomp.read_localhost_profile(path, [])


def test_localhost_must_be_a_regular_small_file(tmp_path):
    with pytest.raises(InvalidArgument, match="regular"):
        seccomp.read_localhost_profile(str(tmp_path), [])
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(seccomp.MAX_PROFILE_BYTES + 1)
    with pytest.raises(InvalidArgument, match="larger"):
        seccomp.read_localhost_profile(str(big), [])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidArgument, match="regular"):
        seccomp.read_localhost_profile(str(fifo), [])


@pytest.mark.parametrize(
    "doc, match",
    [
        ("{not json", "invalid JSON"),
        ("[]", "JSON object"),
        ({}, "defaultAction"),
        ({"defaultAction": "SCMP_ACT_BOGUS"}, "defaultAction"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, "syscalls"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}, "names"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "nope"}]}, "action"),
        (
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["x"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}],
                    }
                ],
            },
            "index",
        ),
        ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["x86"]}, "architectures"),
    ],
)
def test_localhost_invalid_profiles(tmp_path, doc, match):
    with pytest.raises(InvalidArgument, match=match):
        seccomp.read_localhost_profile(write(tmp_path, doc), [])
