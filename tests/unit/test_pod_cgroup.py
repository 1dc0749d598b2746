"""pod_cgroup: resources + overhead arithmetic, the files per cgroup version, refusals, the plan, make and remove
(on plain directories standing in for the hierarchies)."""

from __future__ import annotations

import json
import os

import pytest

from pycrio import pod_cgroup
from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition, InvalidArgument
from pycrio.pod_cgroup import PodLimits, cpu_weight, pod_limits, requested, settings

MiB = 1024 * 1024
POD_ID = "ab" * 32


def res(**fields) -> api_pb2.LinuxContainerResources:
    hugepages = fields.pop("hugepage_limits", [])
    r = api_pb2.LinuxContainerResources(**fields)
    for page_size, limit in hugepages:
        r.hugepage_limits.add(page_size=page_size, limit=limit)
    return r


def linux(parent: str = "", resources=None, overhead=None) -> api_pb2.LinuxPodSandboxConfig:
    config = api_pb2.LinuxPodSandboxConfig(cgroup_parent=parent)
    if resources is not None:
        config.resources.CopyFrom(resources)
    if overhead is not None:
        config.overhead.CopyFrom(overhead)
    return config


# ---------------------------------------------------------------- requested


def test_requested_only_for_limits():
    assert not requested(linux())
    assert not requested(linux(resources=res(), overhead=res()))  # present but empty
    assert not requested(linux(resources=res(oom_score_adj=100, cpu_quota=-1)))  # nothing a cgroup limits
    assert requested(linux(resources=res(memory_limit_in_bytes=64 * MiB)))
    assert requested(linux(overhead=res(cpu_shares=100)))
    assert requested(linux(resources=res(hugepage_limits=[("2MB", 2 * MiB)])))


# ---------------------------------------------------------------- arithmetic


def test_memory_is_the_sum_and_unlimited_without_a_resources_limit():
    r, o = res(memory_limit_in_bytes=64 * MiB), res(memory_limit_in_bytes=16 * MiB)
    assert pod_limits(r, o, 1).memory == 80 * MiB
    assert pod_limits(r, res(), 1).memory == 64 * MiB
    assert pod_limits(res(), o, 1).memory is None  # a container without a limit: the pod has none


def test_cpu_quota_sum_at_one_period():
    limits = pod_limits(res(cpu_quota=50000, cpu_period=100000), res(cpu_quota=25000, cpu_period=100000), 1)
    assert (limits.cpu_quota, limits.cpu_period) == (75000, 100000)
    defaults = pod_limits(res(cpu_quota=50000), res(cpu_quota=10000), 1)  # 0 periods: 100 ms both
    assert (defaults.cpu_quota, defaults.cpu_period) == (60000, 100000)


def test_cpu_quota_periods_differ_overhead_converted_to_the_resources_period():
    # overhead 10 ms per 50 ms = 0.2 CPU = 20 ms per 100 ms
    limits = pod_limits(res(cpu_quota=50000, cpu_period=100000), res(cpu_quota=10000, cpu_period=50000), 1)
    assert (limits.cpu_quota, limits.cpu_period) == (70000, 100000)
    # 0.3 CPU of overhead at a 10 ms period: 3000µs; rounding up, never losing the overhead
    limits = pod_limits(res(cpu_quota=5000, cpu_period=10000), res(cpu_quota=3333, cpu_period=100000), 1)
    assert (limits.cpu_quota, limits.cpu_period) == (5000 + 334, 10000)


def test_no_quota_without_a_resources_quota():
    limits = pod_limits(res(cpu_shares=512), res(cpu_quota=10000, cpu_period=100000), 1)
    assert limits.cpu_quota is None and limits.cpu_period is None


def test_shares_sum_clamped():
    assert pod_limits(res(cpu_shares=1024), res(cpu_shares=102), 1).cpu_shares == 1126
    assert pod_limits(res(), res(cpu_shares=2), 1).cpu_shares == 2
    assert pod_limits(res(cpu_shares=262144), res(cpu_shares=1000), 1).cpu_shares == 262144
    assert pod_limits(res(), res(), 1).cpu_shares is None


def test_cpuset_from_resources_and_hugepages_summed_per_size():
    r = res(cpuset_cpus="0-1", cpuset_mems="0", hugepage_limits=[("2MB", 4 * MiB), ("1GB", 1 << 30)])
    o = res(cpuset_cpus="3", hugepage_limits=[("2MB", 2 * MiB)])
    limits = pod_limits(r, o, 1)
    assert (limits.cpuset_cpus, limits.cpuset_mems) == ("0-1", "0")
    assert limits.hugepages == {"2MB": 6 * MiB, "1GB": 1 << 30}


# ---------------------------------------------------------------- the files


def test_cpu_weight_as_runc_converts():
    assert [cpu_weight(s) for s in (2, 1024, 262144)] == [1, 39, 10000]


def test_v1_settings():
    limits = PodLimits(memory=80 * MiB, cpu_quota=75000, cpu_period=100000, cpu_shares=1126, cpuset_cpus="0",
                       hugepages={"2MB": 2 * MiB})  # fmt: skip
    files = [(c, n, v) for c, n, v, _ in settings(limits, 1)]
    assert files == [
        ("cpuset", "cpuset.cpus", "0"),
        ("memory", "memory.limit_in_bytes", str(80 * MiB)),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("cpu", "cpu.cfs_quota_us", "75000"),
        ("cpu", "cpu.shares", "1126"),
        ("hugetlb", "hugetlb.2MB.limit_in_bytes", str(2 * MiB)),
    ]


def test_v2_settings():
    limits = PodLimits(memory=80 * MiB, cpu_quota=75000, cpu_period=100000, cpu_shares=1024, cpuset_mems="0",
                       hugepages={"1GB": 1 << 30})  # fmt: skip
    files = [(c, n, v) for c, n, v, _ in settings(limits, 2)]
    assert files == [
        ("cpuset", "cpuset.mems", "0"),
        ("memory", "memory.max", str(80 * MiB)),
        ("cpu", "cpu.max", "75000 100000"),
        ("cpu", "cpu.weight", "39"),
        ("hugetlb", "hugetlb.1GB.max", str(1 << 30)),
    ]
    assert settings(PodLimits(), 2) == []


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "resources,overhead,words",
    [
        (res(), res(memory_limit_in_bytes=-1), ["linux.overhead", "memory_limit_in_bytes"]),
        (res(), res(memory_limit_in_bytes=1), ["linux.overhead", "memory_limit_in_bytes"]),
        (res(), res(cpu_shares=10**12), ["linux.overhead", "cpu_shares"]),
        (res(cpu_quota=5), res(), ["linux.resources", "cpu_quota"]),
        (res(cpu_period=10**9), res(), ["linux.resources", "cpu_period"]),
        (res(cpuset_cpus="3-1"), res(), ["linux.resources", "cpuset_cpus"]),
        (res(), res(hugepage_limits=[("2XB", 1)]), ["linux.overhead", "hugepage_limits"]),
        (res(cpu_quota=1 << 43, cpu_period=1000), res(cpu_quota=1 << 43, cpu_period=1000), ["cpu_quota"]),
        (res(memory_limit_in_bytes=(1 << 63) - 1), res(memory_limit_in_bytes=1 << 30), ["memory_limit_in_bytes"]),
        (res(hugepage_limits=[("2MB", 1 << 63)]), res(hugepage_limits=[("2MB", 1 << 63)]), ["hugepage_limits"]),
    ],
)
def test_refusals_name_the_field(resources, overhead, words):
    with pytest.raises(InvalidArgument) as info:
        pod_limits(resources, overhead, 1)
    assert all(w in str(info.value) for w in words), str(info.value)


# ---------------------------------------------------------------- plan, make, remove


@pytest.fixture
def fake_v1(tmp_path, monkeypatch):
    """Plain directories standing in for v1 hierarchies (memory, cpu, cpuset) and the unified one."""
    tops = {str(tmp_path / "memory"): {"memory"}, str(tmp_path / "cpu"): {"cpu"},
            str(tmp_path / "cpuset"): {"cpuset"}, str(tmp_path / "unified"): set()}  # fmt: skip
    for top in tops:
        os.mkdir(top)
    monkeypatch.setattr(pod_cgroup, "hierarchies", lambda version: tops)
    return tmp_path


def test_hierarchies_v1_from_mountinfo(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
        "50 23 0:40 / /proc rw - proc proc rw\n"
    )
    assert pod_cgroup.hierarchies(1, str(mountinfo)) == {
        "/sys/fs/cgroup/cpu,cpuacct": {"cpu", "cpuacct"},
        "/sys/fs/cgroup/memory": {"memory"},
        "/sys/fs/cgroup/systemd": set(),
        "/sys/fs/cgroup/unified": set(),
    }


def test_no_plan_without_resources_or_when_the_cgroup_exists(fake_v1):
    assert pod_cgroup.plan("cgroupfs", 1, linux("/kube/pod1"), POD_ID) is None
    os.makedirs(fake_v1 / "memory/kube/pod1")  # the kubelet made it
    r = res(memory_limit_in_bytes=64 * MiB)
    assert pod_cgroup.plan("cgroupfs", 1, linux("/kube/pod1", r), POD_ID) is None
    assert pod_cgroup.plan("systemd", 1, linux("kube.slice", r), POD_ID) is None


def test_plan_for_a_missing_parent(fake_v1):
    os.makedirs(fake_v1 / "memory/kube")
    r, o = res(memory_limit_in_bytes=64 * MiB, cpu_quota=50000), res(memory_limit_in_bytes=16 * MiB)
    p = pod_cgroup.plan("cgroupfs", 1, linux("/kube/pod1/", r, o), POD_ID)
    assert p is not None and p.cgroup == "/kube/pod1"
    assert set(p.pod_dirs) == {f"{fake_v1}/{h}/kube/pod1" for h in ("memory", "cpu", "cpuset", "unified")}
    assert f"{fake_v1}/cpu/kube" in p.dirs and f"{fake_v1}/memory/kube" not in p.dirs
    assert p.dirs.index(f"{fake_v1}/cpu/kube") < p.dirs.index(f"{fake_v1}/cpu/kube/pod1")
    record = json.loads(json.dumps(p.record()))
    assert record["files"]["memory.limit_in_bytes"] == str(80 * MiB)
    assert record["limits"] == {"memory": 80 * MiB, "cpu_quota": 50000, "cpu_period": 100000}


def test_plan_for_an_empty_parent_is_a_pod_cgroup_under_the_default_parent(fake_v1):
    p = pod_cgroup.plan("cgroupfs", 1, linux("", overhead=res(cpu_shares=100)), POD_ID)
    assert p is not None and p.cgroup == f"/pycrio/pycrio-pod-{POD_ID}"


def test_plan_refuses_before_anything_is_made(fake_v1):
    with pytest.raises(InvalidArgument, match="linux.overhead: memory_limit_in_bytes"):
        pod_cgroup.plan("cgroupfs", 1, linux("/kube/pod1", overhead=res(memory_limit_in_bytes=-5)), POD_ID)
    with pytest.raises(FailedPrecondition, match="hugetlb"):
        pod_cgroup.plan("cgroupfs", 1, linux("/kube/pod1", res(hugepage_limits=[("2MB", MiB)])), POD_ID)
    with pytest.raises(InvalidArgument, match="cgroup_parent"):
        pod_cgroup.plan("cgroupfs", 1, linux("kube.slice", res(cpu_shares=10)), POD_ID)
    assert not os.path.exists(fake_v1 / "memory/kube")


def test_v2_plan_enables_controllers_down_to_the_parent(tmp_path, monkeypatch):
    monkeypatch.setattr(pod_cgroup, "hierarchies", lambda version: {pod_cgroup.CGROUP_ROOT: {"cpu", "memory"}})
    p = pod_cgroup.plan("cgroupfs", 2, linux("/a/b/pod", res(memory_limit_in_bytes=64 * MiB, cpu_shares=2)), POD_ID)
    assert p is not None
    root = pod_cgroup.CGROUP_ROOT
    assert p.subtree == [
        (root, ["cpu", "memory"]),
        (f"{root}/a", ["cpu", "memory"]),
        (f"{root}/a/b", ["cpu", "memory"]),
    ]


def test_make_writes_and_remove_removes_what_it_made(fake_v1):
    os.makedirs(fake_v1 / "memory/kube")
    p = pod_cgroup.plan("cgroupfs", 1, linux("/kube/pod1", res(memory_limit_in_bytes=64 * MiB)), POD_ID)
    assert p is not None
    pod_cgroup.make(p)
    limit_file = fake_v1 / "memory/kube/pod1/memory.limit_in_bytes"
    assert limit_file.read_text() == str(64 * MiB)
    limit_file.unlink()  # a cgroup's files go with it; plain directories need the help
    facts = {"pod_cgroup": p.record()}
    pod_cgroup.release(facts)
    assert facts["pod_cgroup"] is None
    assert not os.path.exists(fake_v1 / "memory/kube/pod1") and not os.path.exists(fake_v1 / "cpu/kube")
    assert os.path.isdir(fake_v1 / "memory/kube")  # not made by pycrio
    pod_cgroup.release(facts)  # again: nothing to do


def test_remove_leaves_a_pod_cgroup_someone_else_put_a_cgroup_under(fake_v1):
    p = pod_cgroup.plan("cgroupfs", 1, linux("/kube/pod1", res(cpu_shares=10)), POD_ID)
    assert p is not None
    pod_cgroup.make(p)
    (fake_v1 / "cpu/kube/pod1/cpu.shares").unlink()
    os.mkdir(fake_v1 / "memory/kube/pod1/pycrio-other")
    pod_cgroup.remove(p.record())
    assert os.path.isdir(fake_v1 / "memory/kube/pod1/pycrio-other")
    assert not os.path.exists(fake_v1 / "cpu/kube")


def test_a_crash_before_the_facts_are_stored_is_found_through_the_record(fake_v1, tmp_path):
    p = pod_cgroup.plan("cgroupfs", 1, linux("/kube/pod1", res(cpu_shares=10)), POD_ID)
    assert p is not None
    pod_dir = tmp_path / "pods" / POD_ID
    os.makedirs(pod_dir)
    pod_cgroup.write_record(str(pod_dir), p.record())
    pod_cgroup.make(p)
    (fake_v1 / "cpu/kube/pod1/cpu.shares").unlink()
    assert pod_cgroup.remove_recorded(str(tmp_path)) == ["/kube/pod1"]
    assert not os.path.exists(fake_v1 / "memory/kube")


def test_describe_is_json():
    config = api_pb2.PodSandboxConfig(linux=linux("", res(memory_limit_in_bytes=64 * MiB), res(cpu_shares=100)))
    described = json.loads(json.dumps(pod_cgroup.describe(config, {})))
    assert described["resources"] == {"memory_limit_in_bytes": str(64 * MiB)}
    assert described["overhead"] == {"cpu_shares": "100"} and described["podCgroup"] is None


def test_zero_hugepage_limits_alone_make_no_pod_cgroup_and_need_no_controller(fake_v1):
    zeros = res(hugepage_limits=[("2MB", 0), ("1GB", 0)])
    assert not requested(linux("/kube/pod1", zeros))
    zeros.memory_limit_in_bytes = 64 * MiB
    p = pod_cgroup.plan("cgroupfs", 1, linux("/kube/pod1", zeros), POD_ID)
    assert p is not None and [w[1] for w in p.writes] == ["memory.limit_in_bytes"]


def test_the_default_parent_made_for_a_pod_is_not_removed_with_it(fake_v1):
    p = pod_cgroup.plan("cgroupfs", 1, linux("", res(cpu_shares=10)), POD_ID)
    assert p is not None
    pod_cgroup.make(p)
    (fake_v1 / f"cpu/pycrio/pycrio-pod-{POD_ID}/cpu.shares").unlink()
    pod_cgroup.remove(p.record())
    assert not os.path.exists(fake_v1 / f"cpu/pycrio/pycrio-pod-{POD_ID}")
    assert os.path.isdir(fake_v1 / "cpu/pycrio")  # shared by every pod without a parent


def test_v2_make_enables_missing_controllers_and_writes_the_v2_files(tmp_path, monkeypatch):
    root = str(tmp_path)
    monkeypatch.setattr(pod_cgroup, "CGROUP_ROOT", root)
    monkeypatch.setattr(pod_cgroup, "hierarchies", lambda version: {root: {"cpu", "memory", "cpuset"}})
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory\n")
    os.mkdir(tmp_path / "a")
    (tmp_path / "a/cgroup.subtree_control").write_text("")
    r = res(memory_limit_in_bytes=64 * MiB, cpu_quota=50000, cpu_shares=1024)
    p = pod_cgroup.plan("cgroupfs", 2, linux("/a/pod", r, res(memory_limit_in_bytes=16 * MiB)), POD_ID)
    assert p is not None and p.dirs == [f"{root}/a/pod"]
    pod_cgroup.make(p)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "cpu memory\n"  # both there already
    assert (tmp_path / "a/cgroup.subtree_control").read_text() == "+memory"  # +cpu, then +memory
    assert (tmp_path / "a/pod/memory.max").read_text() == str(80 * MiB)
    assert (tmp_path / "a/pod/cpu.max").read_text() == "50000 100000"
    assert (tmp_path / "a/pod/cpu.weight").read_text() == "39"


def test_a_refused_write_undoes_the_directories_made(fake_v1, monkeypatch):
    p = pod_cgroup.plan("cgroupfs", 1, linux("/kube/pod1", res(cpu_shares=10)), POD_ID)
    assert p is not None

    def refuse(path, value, fields):
        raise InvalidArgument(f"{fields}: {path} refused {value!r} (Invalid argument)")

    monkeypatch.setattr(pod_cgroup, "_write", refuse)
    with pytest.raises(InvalidArgument, match="cpu_shares"):
        pod_cgroup.make(p)
    assert not any(os.path.exists(fake_v1 / h / "kube") for h in ("memory", "cpu", "cpuset", "unified"))


def test_write_maps_kernel_refusals(tmp_path):
    with pytest.raises(InvalidArgument, match="hugepage_limits 3MB"):
        pod_cgroup._write(str(tmp_path / "nodir" / "hugetlb.3MB.limit_in_bytes"), "4096", "hugepage_limits 3MB")
    pod_cgroup._write(str(tmp_path / "nodir" / "hugetlb.3MB.limit_in_bytes"), "0", "hugepage_limits 3MB")  # fine


def update(record, config, version):
    """As Lifecycle.update_pod_resources runs it: the limits checked first, then written."""
    return pod_cgroup.update(record, pod_limits(config.resources, config.overhead, version), version)


def test_v2_update_rewrites_limits_and_lifts_the_ones_no_longer_asked(tmp_path, monkeypatch):
    root = str(tmp_path)
    monkeypatch.setattr(pod_cgroup, "CGROUP_ROOT", root)
    monkeypatch.setattr(pod_cgroup, "hierarchies", lambda version: {root: {"cpu", "memory"}})
    os.makedirs(tmp_path / "a/pod")
    record = {"path": "/a/pod", "dirs": [f"{root}/a/pod"], "limits": {}, "files": {}}
    r = res(memory_limit_in_bytes=64 * MiB, cpu_quota=50000, cpu_shares=1024)
    out = update(record, linux("/a/pod", r, res(memory_limit_in_bytes=16 * MiB)), 2)
    assert (tmp_path / "a/pod/memory.max").read_text() == str(80 * MiB)
    assert (tmp_path / "a/pod/cpu.max").read_text() == "50000 100000"
    assert (tmp_path / "a/pod/cpu.weight").read_text() == "39"
    assert out["limits"]["memory"] == 80 * MiB and out["path"] == "/a/pod"
    update(record, linux("/a/pod", res(cpu_shares=2)), 2)  # no memory limit, no quota now
    assert (tmp_path / "a/pod/memory.max").read_text() == "max"
    assert (tmp_path / "a/pod/cpu.max").read_text() == "max"
    with pytest.raises(InvalidArgument, match="memory_limit_in_bytes"):
        update(record, linux("/a/pod", res(memory_limit_in_bytes=-1)), 2)
    assert (tmp_path / "a/pod/memory.max").read_text() == "max"  # nothing written


def test_update_maps_a_busy_memory_limit_to_failed_precondition(fake_v1, monkeypatch):
    """The kernel answers EBUSY to a v1 memory limit below what the cgroup uses now."""
    real_open = open

    def refusing_open(path, mode="r", *a, **kw):
        if str(path).endswith("memory.limit_in_bytes") and "w" in mode:
            raise OSError(16, "Device or resource busy")
        return real_open(path, mode, *a, **kw)

    os.makedirs(fake_v1 / "memory/kube/pod1")
    os.makedirs(fake_v1 / "cpu/kube/pod1")
    monkeypatch.setattr(pod_cgroup, "open", refusing_open, raising=False)
    record = {"path": "/kube/pod1", "dirs": [], "limits": {}, "files": {}}
    with pytest.raises(FailedPrecondition, match="memory_limit_in_bytes"):
        update(record, linux("/kube/pod1", res(memory_limit_in_bytes=8 * MiB)), 1)
