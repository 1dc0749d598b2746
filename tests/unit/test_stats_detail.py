"""stats_cgroup's detailed samples (for the metrics), stats_io and stats_procs: cgroup v1 and v2 files from
fixture trees, block I/O per device, descriptors and limits from /proc."""

from __future__ import annotations

import os
import resource
import socket

from pycrio.stats_cgroup import parse_cpu_max, parse_pressure, weight_to_shares
from pycrio.stats_io import device_name, merge_io, name_devices, parse_blkio_v1, parse_io_stat
from pycrio.stats_procs import count_fds, parse_open_files_soft, parse_pids, read_open_files_soft
from tests.unit.test_stats import V1_FILES, V2_FILES, MiB, psi, sys_dev_block, v1_cgroups, v1_tree, v2_cgroups, v2_tree


def test_v1_detailed_sample(tmp_path):
    v1_tree(str(tmp_path), "/k/c1")
    cgroups = v1_cgroups(str(tmp_path))
    basic = cgroups.read("/k/c1")
    assert basic.cfs_periods is None and basic.fds is None and basic.io_bytes is None  # the stats RPCs' sample
    u = cgroups.read("/k/c1", detail=True)
    assert u.memory_usage == 10 * MiB  # and the basic values
    assert (u.cfs_periods, u.cfs_throttled_periods, u.cfs_throttled_ns) == (40, 7, 2_500_000_000)
    assert (u.cpu_period, u.cpu_quota, u.cpu_shares) == (100_000, 20_000, 512)
    assert (u.spec_swap_limit, u.memory_reservation) == (0, 0)  # unlimited
    assert (u.memory_failcnt, u.memory_max_usage, u.kernel_usage, u.oom_kills) == (4, 12 * MiB, MiB, 2)
    assert (u.threads, u.threads_max) == (3, 0)  # pids.current, and "max": none
    assert u.io_bytes == {
        (8, 0, "/dev/sda"): {"Read": 4096, "Write": 8192, "Sync": 12288, "Async": 0, "Discard": 0, "Total": 12288},
        (253, 1, "/dev/dm-1"): {"Read": 0, "Write": 512},
    }
    assert u.io_ops == {(8, 0, "/dev/sda"): {"Read": 1, "Write": 2, "Total": 3}}
    assert u.pressure is None  # v2 only
    fds, sockets = count_fds([os.getpid()])  # cgroup.procs lists this process
    assert u.fds is not None and u.sockets is not None and abs(u.fds - fds) <= 2 and u.sockets == sockets


def test_v1_detail_fallbacks(tmp_path):
    files = dict(V1_FILES)
    files["cpu/cpu.cfs_quota_us"] = "-1\n"  # no quota
    files["memory/memory.memsw.limit_in_bytes"] = f"{96 * MiB}\n"  # cAdvisor's swap limit: memory plus swap
    files["memory/memory.soft_limit_in_bytes"] = f"{MiB}\n"
    files["pids/pids.max"] = "100\n"
    del files["blkio/blkio.throttle.io_service_bytes_recursive"], files["blkio/blkio.throttle.io_serviced_recursive"]
    files["blkio/blkio.throttle.io_service_bytes"] = "7:3 Read 10\n"  # no recursive files: the cgroup's own
    del files["memory/memory.memsw.usage_in_bytes"]  # no swap accounting: the limit is still read
    v1_tree(str(tmp_path), "/c", files)
    u = v1_cgroups(str(tmp_path)).read("/c", detail=True)
    assert u.cpu_quota == 0 and u.spec_swap_limit == 96 * MiB and u.memory_reservation == MiB
    assert u.threads_max == 100
    assert u.io_bytes == {(7, 3, ""): {"Read": 10}} and u.io_ops is None  # 7:3 unknown to /sys/dev/block


def test_v2_detailed_sample(tmp_path):
    v2_tree(str(tmp_path), "/c")
    u = v2_cgroups(str(tmp_path)).read("/c", detail=True)
    assert (u.cfs_periods, u.cfs_throttled_periods, u.cfs_throttled_ns) == (10, 3, 1_500_000_000)
    assert (u.cpu_period, u.cpu_quota, u.cpu_shares) == (100_000, 50_000, 2 + 99 * 262142 // 9999)
    assert (u.spec_swap_limit, u.memory_reservation) == (0, 2 * MiB)  # memory.swap.max "max"; memory.min
    assert (u.memory_failcnt, u.oom_kills) == (9, 1)  # memory.events max and oom_kill
    assert (u.memory_max_usage, u.kernel_usage) == (9 * MiB, MiB)
    assert (u.threads, u.threads_max) == (2, 1024)
    assert u.io_bytes == {(8, 0, "/dev/sda"): {"Read": 1024, "Write": 2048}}
    assert u.io_ops == {(8, 0, "/dev/sda"): {"Read": 3, "Write": 4}}
    assert u.pressure == {("cpu", "some"): 3_500_000, ("cpu", "full"): 1_200_000, ("memory", "some"): 10,
                          ("memory", "full"): 5}  # fmt: skip
    assert (u.fds, u.sockets) == (0, 0)  # no process in the cgroup itself


def test_v2_detail_fallbacks(tmp_path):
    files = dict(V2_FILES, **{"cpu.max": "max 100000\n", "memory.stat": "slab 100\nkernel_stack 20\npercpu 3\n"})
    del files["memory.peak"], files["io.stat"], files["cpu.weight"]  # kernels before 5.19; no io, cpu controllers
    v2_tree(str(tmp_path), "/c", files)
    u = v2_cgroups(str(tmp_path)).read("/c", detail=True)
    assert (u.cpu_quota, u.cpu_period, u.cpu_shares) == (0, 100_000, None)
    assert u.kernel_usage == 123  # before "kernel" (5.18): its parts
    assert u.memory_max_usage is None and u.io_bytes is None and u.io_ops is None
    files["cpu.max"] = "garbled\n"
    v2_tree(str(tmp_path), "/d", files)
    assert v2_cgroups(str(tmp_path)).read("/d", detail=True).cpu_quota is None


def test_cgroup_file_parsers():
    assert parse_pressure(psi(7, 3)) == {"some": 7, "full": 3}
    assert parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n\n") == {"some": 9}  # cpu before 5.13
    assert parse_pressure("some total=x\n") == {} and parse_pressure("") == {}
    assert parse_cpu_max("max 100000\n") == (0, 100_000) and parse_cpu_max("20000 50000") == (20_000, 50_000)
    assert parse_cpu_max("20000") is None and parse_cpu_max("-1 100000") is None
    assert (weight_to_shares(1), weight_to_shares(100), weight_to_shares(10000)) == (2, 2597, 262144)
    assert weight_to_shares(0) is None and weight_to_shares(10001) is None


def test_block_io_parsers(tmp_path):
    v1 = parse_blkio_v1("8:0 Read 10\n8:0 Write 5\n8:16 Read x\nbad Read 1\n8:0 Total 15\nTotal 15\n\n")
    assert v1 == {(8, 0): {"Read": 10, "Write": 5, "Total": 15}}
    io_bytes, io_ops = parse_io_stat(
        "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=5 dios=1\n259:0 rbytes=x wbytes=3\nnonsense\n"
    )
    assert io_bytes == {(8, 0): {"Read": 10, "Write": 20}, (259, 0): {"Write": 3}}  # discards left out
    assert io_ops == {(8, 0): {"Read": 1, "Write": 2}}
    sys_block = sys_dev_block(str(tmp_path))
    assert device_name(8, 0, sys_block) == "/dev/sda" and device_name(253, 1, sys_block) == "/dev/dm-1"
    assert device_name(1, 99, sys_block) == ""
    named_bytes, named_ops = name_devices(io_bytes, io_ops, sys_dev_block=sys_block)
    assert set(named_bytes) == {(8, 0, "/dev/sda"), (259, 0, "")} and named_ops == {(8, 0, "/dev/sda"): io_ops[8, 0]}
    a = {(8, 0, "/dev/sda"): {"Read": 1, "Write": 2}}
    b = {(8, 0, "/dev/sda"): {"Read": 10}, (8, 16, "/dev/sdb"): {"Write": 4}}
    assert merge_io([a, b]) == {(8, 0, "/dev/sda"): {"Read": 11, "Write": 2}, (8, 16, "/dev/sdb"): {"Write": 4}}
    assert a == {(8, 0, "/dev/sda"): {"Read": 1, "Write": 2}}  # the parts stay as they were


def test_process_counts_from_proc(tmp_path):
    assert parse_pids("12\n345\n\nx\n") == [12, 345] and parse_pids("") == []
    before_fds, before_sockets = count_fds([os.getpid()])
    with socket.socket() as s1, socket.socket(), open(__file__):
        fds, sockets = count_fds([os.getpid(), 2**22 + 1])  # a pid that is not there is skipped
        assert s1.fileno() >= 0
    assert fds == before_fds + 3 and sockets == before_sockets + 2
    assert count_fds([]) == (0, 0)
    limits = (
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max cpu time              unlimited            unlimited            seconds   \n"
        "Max open files            1024                 524288               files     \n"
    )
    assert parse_open_files_soft(limits) == 1024
    assert parse_open_files_soft(limits.replace("1024 ", "unlimited")) is None  # -1 to cAdvisor: not unsigned
    assert parse_open_files_soft("") is None
    assert read_open_files_soft(os.getpid()) == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert read_open_files_soft(2**22 + 1) is None
