"""spec_resources: CRI resources → linux.resources, each refusal, cgroup paths, oom clamp, host probes."""

from __future__ import annotations

import pytest

from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition, InvalidArgument
from pycrio.spec_resources import (
    cgroup_version,
    cgroups_path,
    daemon_oom_score_adj,
    hugepage_sizes,
    linux_resources,
    oom_score_adj,
    update_resources,
)

MiB = 1024 * 1024


def res(**fields):
    hugepages = fields.pop("hugepage_limits", [])
    unified = fields.pop("unified", {})
    r = api_pb2.LinuxContainerResources(**fields)
    for page_size, limit in hugepages:
        r.hugepage_limits.add(page_size=page_size, limit=limit)
    r.unified.update(unified)
    return r


MAPPINGS = [
    ({}, {}),
    ({"cpu_shares": 2}, {"cpu": {"shares": 2}}),
    ({"cpu_shares": 262144}, {"cpu": {"shares": 262144}}),
    ({"cpu_period": 100000, "cpu_quota": 20000}, {"cpu": {"period": 100000, "quota": 20000}}),
    ({"cpu_period": 100000, "cpu_quota": 0}, {"cpu": {"period": 100000}}),
    ({"cpu_quota": -1}, {}),
    ({"cpuset_cpus": "0-3,6", "cpuset_mems": "0"}, {"cpu": {"cpus": "0-3,6", "mems": "0"}}),
    ({"memory_limit_in_bytes": 6 * MiB}, {"memory": {"limit": 6 * MiB}}),
    (
        {"memory_limit_in_bytes": 100 * MiB, "memory_swap_limit_in_bytes": 100 * MiB},
        {"memory": {"limit": 100 * MiB, "swap": 100 * MiB}},
    ),
    (
        {"memory_limit_in_bytes": 100 * MiB, "memory_swap_limit_in_bytes": -1},
        {"memory": {"limit": 100 * MiB, "swap": -1}},
    ),
    (
        {"hugepage_limits": [("2MB", 0), ("1GB", 2**30)]},
        {"hugepageLimits": [{"pageSize": "2MB", "limit": 0}, {"pageSize": "1GB", "limit": 2**30}]},
    ),
    ({"oom_score_adj": 500}, {}),  # process.oomScoreAdj, not a cgroup setting
]


@pytest.mark.parametrize("fields,expected", MAPPINGS)
def test_mapping(fields, expected):
    assert linux_resources(res(**fields), 1) == expected


REFUSALS = [
    ({"cpu_shares": -5}, "cpu_shares -5 is out of range"),
    ({"cpu_shares": 1}, "cpu_shares 1 is out of range"),
    ({"cpu_shares": 262145}, "cpu_shares 262145 is out of range"),
    ({"cpu_period": -1}, "cpu_period -1µs is out of range"),
    ({"cpu_period": 999}, "cpu_period 999µs is out of range"),
    ({"cpu_period": 1000001}, "cpu_period 1000001µs is out of range"),
    ({"cpu_quota": -2}, "cpu_quota -2µs"),
    ({"cpu_quota": 999}, "cpu_quota 999µs: expected at least 1000µs"),
    ({"cpuset_cpus": "0-"}, "cpuset_cpus '0-'"),
    ({"cpuset_cpus": "a"}, "cpuset_cpus 'a'"),
    ({"cpuset_cpus": "3-1"}, "runs backwards"),
    ({"cpuset_mems": "0,,1"}, "cpuset_mems"),
    ({"memory_limit_in_bytes": -1}, "memory_limit_in_bytes -1 is negative"),
    ({"memory_limit_in_bytes": 6 * MiB - 1}, "below the minimum memory limit of 6 MiB"),
    ({"memory_limit_in_bytes": 1}, "below the minimum memory limit of 6 MiB"),
    ({"memory_swap_limit_in_bytes": 100 * MiB}, "without memory_limit_in_bytes"),
    ({"memory_limit_in_bytes": 100 * MiB, "memory_swap_limit_in_bytes": 50 * MiB}, "below memory_limit_in_bytes"),
    ({"memory_limit_in_bytes": 100 * MiB, "memory_swap_limit_in_bytes": -2}, "memory_swap_limit_in_bytes -2"),
    ({"hugepage_limits": [("2M", 1)]}, "page size '2M'"),
    ({"hugepage_limits": [("0MB", 1)]}, "page size '0MB'"),
    ({"hugepage_limits": [("2MB", 1), ("2MB", 2)]}, "given twice"),
    ({"unified": {"memory.high": "1"}}, "need cgroup v2"),
]


@pytest.mark.parametrize("fields,match", REFUSALS)
def test_refusal(fields, match):
    with pytest.raises(InvalidArgument, match=match):
        linux_resources(res(**fields), 1)


def test_unified_on_v2():
    r = res(unified={"pids.max": "100", "memory.high": "1000000"})
    assert linux_resources(r, 2) == {"unified": {"memory.high": "1000000", "pids.max": "100"}}
    for bad in ("../memory.max", ".hidden", "a/b"):
        with pytest.raises(InvalidArgument, match="not a cgroup v2 interface file"):
            linux_resources(res(unified={bad: "1"}), 2)


# ---------------------------------------------------------------- cgroups path


@pytest.mark.parametrize(
    "manager,parent,expected",
    [
        ("cgroupfs", "/kubepods/besteffort/podab", "/kubepods/besteffort/podab/pycrio-cid"),
        ("cgroupfs", "/kubepods/", "/kubepods/pycrio-cid"),
        ("cgroupfs", "", "/pycrio/pycrio-cid"),
        ("systemd", "kubepods-besteffort-podab.slice", "kubepods-besteffort-podab.slice:pycrio:cid"),
        ("systemd", "", "system.slice:pycrio:cid"),
    ],
)
def test_cgroups_path(manager, parent, expected):
    assert cgroups_path(manager, parent, "cid") == expected


@pytest.mark.parametrize(
    "manager,parent,cid,match",
    [
        ("cgroupfs", "kubepods-burstable.slice", "cid", "is a systemd slice"),
        ("cgroupfs", "kubepods/pod", "cid", "expected an absolute cgroup path"),
        ("cgroupfs", "/kubepods/../escape", "cid", "without '..'"),
        ("systemd", "/kubepods/burstable", "cid", "wants a slice name"),
        ("systemd", "kubepods", "cid", "wants a slice name"),
        ("cgroupfs", "/k", "a/b", "container id"),
        ("cgroupfs", "/k", "", "container id"),
        ("cgroupfs", "/k", "..", "container id"),
        ("lxc", "/k", "cid", "expected cgroupfs or systemd"),
    ],
)
def test_cgroups_path_refusals(manager, parent, cid, match):
    with pytest.raises(InvalidArgument, match=match):
        cgroups_path(manager, parent, cid)


# ---------------------------------------------------------------- oom_score_adj


@pytest.mark.parametrize(
    "requested,daemon,expected",
    [
        (-998, 0, 0),
        (-998, -1000, -998),
        (-1000, -1000, -1000),
        (0, 0, 0),
        (999, 0, 999),
        (1000, 1000, 1000),
        (0, 900, 900),
    ],
)
def test_oom_clamp(requested, daemon, expected):
    assert oom_score_adj(requested, daemon) == expected


@pytest.mark.parametrize("requested", [-1001, 1001])
def test_oom_out_of_range(requested):
    with pytest.raises(InvalidArgument, match="out of range"):
        oom_score_adj(requested, 0)


# ---------------------------------------------------------------- probes

HYBRID = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
33 31 0:30 / /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory
"""
UNIFIED = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""
STACKED = UNIFIED + "40 31 0:40 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw\n"


@pytest.mark.parametrize("text,expected", [(HYBRID, 1), (UNIFIED, 2), (STACKED, 1), ("", 1)])
def test_cgroup_version_from_mountinfo(tmp_path, text, expected):
    path = tmp_path / "mountinfo"
    path.write_text(text)
    assert cgroup_version(str(path)) == expected


def test_cgroup_version_of_this_host_matches_the_filesystem():
    import os

    unified = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    assert cgroup_version() == (2 if unified else 1)


def test_daemon_oom_score_adj(tmp_path):
    with open("/proc/self/oom_score_adj") as f:
        assert daemon_oom_score_adj() == int(f.read())
    path = tmp_path / "adj"
    path.write_text("-999\n")
    assert daemon_oom_score_adj(str(path)) == -999


# ---------------------------------------------------------------- hugetlb


def test_hugepage_sizes_need_the_controller(tmp_path):
    mm = tmp_path / "hugepages"
    for name in ("hugepages-2048kB", "hugepages-1048576kB", "hugepages-64kB", "other"):
        (mm / name).mkdir(parents=True)
    v1 = tmp_path / "v1"
    v1.mkdir()
    assert hugepage_sizes(1, str(v1), str(mm)) == frozenset()
    (v1 / "hugetlb").mkdir()
    assert hugepage_sizes(1, str(v1), str(mm)) == {"2MB", "1GB", "64KB"}
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory pids\n")
    assert hugepage_sizes(2, str(v2), str(mm)) == frozenset()
    (v2 / "cgroup.controllers").write_text("cpu memory hugetlb pids\n")
    assert hugepage_sizes(2, str(v2), str(mm)) == {"2MB", "1GB", "64KB"}


def test_hugepage_limits_checked_against_the_host():
    r = res(hugepage_limits=[("2MB", 4 * MiB), ("1GB", 0)])
    assert linux_resources(r, 1, frozenset({"2MB", "1GB"}))["hugepageLimits"] == [
        {"pageSize": "2MB", "limit": 4 * MiB},
        {"pageSize": "1GB", "limit": 0},
    ]
    # The kubelet's zero limits for each of the node's sizes are dropped where nothing can limit them.
    assert linux_resources(res(hugepage_limits=[("2MB", 0), ("1GB", 0)]), 1, frozenset()) == {}
    with pytest.raises(FailedPrecondition, match="needs the hugetlb cgroup controller"):
        linux_resources(r, 1, frozenset())
    with pytest.raises(InvalidArgument, match=r"page size 2MB is not one of this host's \(1GB\)"):
        linux_resources(r, 1, frozenset({"1GB"}))


# ---------------------------------------------------------------- UpdateContainerResources


def test_update_keeps_what_it_does_not_set():
    current = res(memory_limit_in_bytes=64 * MiB, cpu_quota=50_000, cpu_period=100_000, cpuset_cpus="0")
    current.oom_score_adj = 300
    current.hugepage_limits.add(page_size="2MB", limit=0)
    merged, document = update_resources(current, res(cpu_quota=40_000, oom_score_adj=-5), 1)
    assert (merged.memory_limit_in_bytes, merged.cpu_quota, merged.cpu_period) == (64 * MiB, 40_000, 100_000)
    assert (merged.cpuset_cpus, merged.oom_score_adj) == ("0", 300)  # oom_score_adj is set at start only
    assert document == {
        "cpu": {"quota": 40_000, "period": 100_000, "cpus": "0"},
        "memory": {"limit": 64 * MiB},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
    }
    merged, document = update_resources(merged, res(cpu_quota=-1, hugepage_limits=[("1GB", 0)]), 1)
    assert merged.cpu_quota == -1 and document["cpu"]["quota"] == -1  # runc update lifts the quota
    assert [(h.page_size, h.limit) for h in merged.hugepage_limits] == [("2MB", 0), ("1GB", 0)]


@pytest.mark.parametrize(
    "update,match",
    [
        (res(memory_limit_in_bytes=96 * MiB), "memory_swap_limit_in_bytes 67108864 is below memory_limit_in_bytes"),
        (res(cpu_shares=-1), "cpu_shares -1"),
        (res(oom_score_adj=1001), "oom_score_adj 1001 is out of range"),
    ],
)
def test_update_refusals(update, match):
    current = res(memory_limit_in_bytes=64 * MiB, memory_swap_limit_in_bytes=64 * MiB)
    with pytest.raises(InvalidArgument, match=match):
        update_resources(current, update, 1)
