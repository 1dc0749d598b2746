"""The CRI container security context against a real daemon, real runc and the busybox test image, each
field proven from inside the container: users and groups, capabilities, privileged, no_new_privs, a
read-only rootfs, masked and read-only paths; and the requests refused with nothing left behind.
Pod-level fields (host namespaces, sysctls) are in test_security_pod.py."""

from __future__ import annotations

import json
import os
import time

import grpc
import pytest

from pycrio.cri import api_pb2
from tests.e2e.test_pods import node  # noqa: F401  (the fixture)

SLEEP = ["sleep", "600"]

# capabilities(7) numbers of the capabilities these tests name (include/uapi/linux/capability.h).
BIT = {
    "CHOWN": 0,
    "DAC_OVERRIDE": 1,
    "FOWNER": 3,
    "FSETID": 4,
    "KILL": 5,
    "SETGID": 6,
    "SETUID": 7,
    "SETPCAP": 8,
    "NET_BIND_SERVICE": 10,
    "NET_ADMIN": 12,
    "NET_RAW": 13,
    "SYS_ADMIN": 21,
    "SYS_RESOURCE": 24,
}
DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "SETGID", "SETUID", "SETPCAP", "NET_BIND_SERVICE", "KILL")

# What the kubelet sends for the Default proc mount type (k8s.io/kubernetes pkg/securitycontext).
KUBELET_MASKED = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
KUBELET_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def mask(names) -> int:
    return sum(1 << BIT[n] for n in set(names))


def status_masks(path: str) -> dict[str, int]:
    """The Cap* lines of a /proc/<pid>/status file, as integers."""
    with open(path) as f:
        return {k: int(v, 16) for k, _, v in (line.partition(":\t") for line in f) if k.startswith("Cap")}


# ---------------------------------------------------------------- helpers


def run_pod(
    node,  # noqa: F811
    *,
    privileged=False,
    network=api_pb2.POD,
    pid=api_pb2.POD,
    ipc=api_pb2.POD,
    sysctls=None,
    userns=None,
) -> str:
    node.count += 1
    n = node.count
    config = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name=f"pod{n}", namespace="ns", uid=f"uid{n}"),
        log_directory=os.path.join(node.logs, str(n)),
        linux=api_pb2.LinuxPodSandboxConfig(
            cgroup_parent=f"{node.cgroup_base}/pod{n}",
            sysctls=sysctls or {},
            security_context=api_pb2.LinuxSandboxSecurityContext(
                privileged=privileged,
                namespace_options=api_pb2.NamespaceOption(network=network, pid=pid, ipc=ipc),
            ),
        ),
    )
    if userns is not None:
        config.linux.security_context.namespace_options.userns_options.mode = userns
    pod = node.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=30).pod_sandbox_id
    if not hasattr(node, "pod_configs"):
        node.pod_configs = {}
    node.pod_configs[pod] = config
    return pod


def create(node, pod, name, sc=None, mounts=()) -> str:  # noqa: F811
    """CreateContainer as the kubelet sends it: the pod's namespace options copied into the container's."""
    pod_config = node.pod_configs[pod]
    sc = sc or api_pb2.LinuxContainerSecurityContext()
    sc.namespace_options.MergeFrom(pod_config.linux.security_context.namespace_options)
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=node.image),
        command=SLEEP,
        log_path=f"{name}.log",
        mounts=list(mounts),
        linux=api_pb2.LinuxContainerConfig(security_context=sc),
    )
    request = api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=pod_config)
    return node.rt.CreateContainer(request, timeout=30).container_id


def start(node, pod, name, sc=None, mounts=()) -> str:  # noqa: F811
    cid = create(node, pod, name, sc, mounts)
    node.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=30)
    return cid


def sh(node, cid, script: str) -> str:  # noqa: F811
    """stdout of a script that must succeed."""
    r = node.exec(cid, ["sh", "-c", script])
    assert r.exit_code == 0, r
    return r.stdout.decode()


def fails(node, cid, script: str) -> str:  # noqa: F811
    """stderr of a script that must fail."""
    r = node.exec(cid, ["sh", "-c", script])
    assert r.exit_code != 0, r
    return r.stderr.decode()


def proc_status(node, cid) -> dict[str, str]:  # noqa: F811
    """/proc/self/status of a process in the container, as {key: value}."""
    out = sh(node, cid, "cat /proc/self/status")
    return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def main_pid(node, cid) -> int:  # noqa: F811
    """The host pid of the container's first process (ContainerStatus verbose info)."""
    request = api_pb2.ContainerStatusRequest(container_id=cid, verbose=True)
    return json.loads(node.rt.ContainerStatus(request).info["info"])["pid"]


def caps(node, cid) -> dict[str, int]:  # noqa: F811
    status = proc_status(node, cid)
    return {k: int(status[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def daemon_caps(node) -> int:  # noqa: F811
    """What the daemon can hand out: its bounding ∩ permitted set (this machine lacks some, e.g. SYS_RESOURCE)."""
    m = status_masks(f"/proc/{node.d.proc.pid}/status")
    return m["CapBnd"] & m["CapPrm"]


def leftovers(node) -> tuple:  # noqa: F811
    """What a refused CreateContainer must not leave: records and container directories (a removed
    container's directory is renamed .trash-<id> and deleted in the background: waited for)."""
    ids = sorted(c.id for c in node.rt.ListContainers(api_pb2.ListContainersRequest()).containers)
    dirs = [os.path.join(node.d.root, "containers"), os.path.join(node.d.runroot, "containers")]
    deadline = time.monotonic() + 5
    while True:
        found = [sorted(os.listdir(d)) if os.path.isdir(d) else [] for d in dirs]
        if not any(name.startswith(".trash-") for names in found for name in names) or time.monotonic() > deadline:
            return ids, found
        time.sleep(0.02)


def refused(node, pod, sc, *words, code=grpc.StatusCode.INVALID_ARGUMENT, mounts=()) -> str:  # noqa: F811
    """CreateContainer with sc fails with code, a message naming words, and nothing half-made."""
    before = leftovers(node)
    with pytest.raises(grpc.RpcError) as info:
        create(node, pod, "refused", sc, mounts)
    details = info.value.details()
    assert info.value.code() == code, details
    for word in words:
        assert word in details, details
    assert leftovers(node) == before
    return details


def sc_caps(add=(), drop=(), **kw) -> api_pb2.LinuxContainerSecurityContext:
    return api_pb2.LinuxContainerSecurityContext(
        capabilities=api_pb2.Capability(add_capabilities=list(add), drop_capabilities=list(drop)), **kw
    )


# ---------------------------------------------------------------- users and groups


def test_run_as_user_username_and_group(node):  # noqa: F811
    pod = run_pod(node)
    uid = start(node, pod, "uid", api_pb2.LinuxContainerSecurityContext(run_as_user=api_pb2.Int64Value(value=1234)))
    # Not in the image's /etc/passwd: gid 0.
    assert sh(node, uid, "id -u; id -g") == "1234\n0\n"
    named = start(node, pod, "named", api_pb2.LinuxContainerSecurityContext(run_as_username="nobody"))
    assert sh(node, named, "id -u; id -g; id -un") == "65534\n65534\nnobody\n"
    group = start(
        node,
        pod,
        "group",
        api_pb2.LinuxContainerSecurityContext(
            run_as_user=api_pb2.Int64Value(value=1234), run_as_group=api_pb2.Int64Value(value=4321)
        ),
    )
    assert sh(node, group, "id -u; id -g") == "1234\n4321\n"
    # The container's own first process, not only what exec gets.
    with open(f"/proc/{main_pid(node, group)}/status") as f:
        ids = {k: v.split() for k, _, v in (line.partition(":") for line in f) if k in ("Uid", "Gid")}
    assert ids == {"Uid": ["1234"] * 4, "Gid": ["4321"] * 4}
    root = start(node, pod, "root")
    assert sh(node, root, "id -u; id -g") == "0\n0\n"


def test_bad_users_are_refused(node):  # noqa: F811
    pod = run_pod(node)
    group_only = api_pb2.LinuxContainerSecurityContext(run_as_group=api_pb2.Int64Value(value=4321))
    refused(node, pod, group_only, "run_as_group")
    refused(node, pod, api_pb2.LinuxContainerSecurityContext(run_as_username="no-such-user"), "no-such-user")
    both = api_pb2.LinuxContainerSecurityContext(run_as_user=api_pb2.Int64Value(value=1), run_as_username="nobody")
    refused(node, pod, both, "run_as_user", "run_as_username")
    refused(node, pod, api_pb2.LinuxContainerSecurityContext(run_as_user=api_pb2.Int64Value(value=-1)), "-1")


# ---------------------------------------------------------------- capabilities


def test_default_capabilities(node):  # noqa: F811
    pod = run_pod(node)
    cid = start(node, pod, "c")
    got = caps(node, cid)
    assert got["CapEff"] == mask(DEFAULT_CAPS) == 0x5FB, hex(got["CapEff"])
    assert got["CapPrm"] == got["CapBnd"] == got["CapEff"]
    assert got["CapInh"] == got["CapAmb"] == 0
    # The effect: CHOWN works, NET_ADMIN does not.
    assert sh(node, cid, "touch /tmp/f && chown 1:1 /tmp/f && stat -c %u:%g /tmp/f") == "1:1\n"
    assert "not permitted" in fails(node, cid, "ip link set lo mtu 1280")


def test_add_and_drop_capabilities(node):  # noqa: F811
    pod = run_pod(node)
    # With and without the CAP_ prefix, in any case.
    added = start(node, pod, "add", sc_caps(add=["NET_ADMIN", "CAP_NET_RAW", "sys_admin"]))
    assert caps(node, added)["CapEff"] == mask([*DEFAULT_CAPS, "NET_ADMIN", "NET_RAW", "SYS_ADMIN"])
    assert sh(node, added, "ip link set lo mtu 1280 && cat /sys/class/net/lo/mtu") == "1280\n"
    assert sh(node, added, "mkdir /m && mount -t tmpfs x /m && grep -c ' /m tmpfs ' /proc/mounts") == "1\n"
    dropped = start(node, pod, "drop", sc_caps(drop=["CHOWN", "CAP_KILL"]))
    assert caps(node, dropped)["CapEff"] == mask(set(DEFAULT_CAPS) - {"CHOWN", "KILL"})
    assert "not permitted" in fails(node, dropped, "touch /tmp/f && chown 1:1 /tmp/f")


def test_all_in_add_and_drop(node):  # noqa: F811
    pod = run_pod(node)
    held = daemon_caps(node)
    every = start(node, pod, "all", sc_caps(add=["ALL"]))
    assert caps(node, every)["CapEff"] == held, hex(caps(node, every)["CapEff"])
    all_but = start(node, pod, "allbut", sc_caps(add=["ALL"], drop=["CHOWN"]))
    assert caps(node, all_but)["CapEff"] == held & ~mask(["CHOWN"])
    none = start(node, pod, "none", sc_caps(drop=["ALL"]))
    got = caps(node, none)
    assert got["CapEff"] == got["CapPrm"] == got["CapBnd"] == 0, got
    assert "not permitted" in fails(node, none, "touch /tmp/f && chown 1:1 /tmp/f")
    one = start(node, pod, "one", sc_caps(add=["NET_ADMIN"], drop=["ALL"]))
    assert caps(node, one)["CapEff"] == mask(["NET_ADMIN"])
    assert sh(node, one, "ip link set lo mtu 1280 && cat /sys/class/net/lo/mtu") == "1280\n"


def test_ambient_capability_for_a_non_root_user(node):  # noqa: F811
    pod = run_pod(node)
    sc = api_pb2.LinuxContainerSecurityContext(
        run_as_user=api_pb2.Int64Value(value=1000),
        capabilities=api_pb2.Capability(drop_capabilities=["ALL"], add_ambient_capabilities=["NET_ADMIN"]),
    )
    cid = start(node, pod, "ambient", sc)
    got = caps(node, cid)
    assert got["CapAmb"] == got["CapEff"] == got["CapInh"] == mask(["NET_ADMIN"]), got
    assert sh(node, cid, "id -u; ip link set lo mtu 1280 && cat /sys/class/net/lo/mtu") == "1000\n1280\n"
    # Without it, a non-root user's added capability stays in the bounding set only (as with Docker).
    sc = api_pb2.LinuxContainerSecurityContext(
        run_as_user=api_pb2.Int64Value(value=1000), capabilities=api_pb2.Capability(add_capabilities=["NET_ADMIN"])
    )
    plain = start(node, pod, "plain", sc)
    got = caps(node, plain)
    assert (got["CapEff"], got["CapPrm"], got["CapAmb"]) == (0, 0, 0), got
    assert got["CapBnd"] == mask([*DEFAULT_CAPS, "NET_ADMIN"])
    assert "not permitted" in fails(node, plain, "ip link set lo mtu 1280")


def test_bad_capabilities_are_refused(node):  # noqa: F811
    pod = run_pod(node)
    refused(node, pod, sc_caps(add=["NO_SUCH_CAP"]), "NO_SUCH_CAP")
    refused(node, pod, sc_caps(drop=["CAP_BOGUS"]), "CAP_BOGUS")
    refused(node, pod, api_pb2.LinuxContainerSecurityContext(
        capabilities=api_pb2.Capability(add_ambient_capabilities=["WHATEVER"])), "WHATEVER")  # fmt: skip
    if not daemon_caps(node) >> BIT["SYS_RESOURCE"] & 1:  # this machine withholds it: refused, not a runc failure
        refused(node, pod, sc_caps(add=["SYS_RESOURCE"]), "CAP_SYS_RESOURCE", "does not hold")


# ---------------------------------------------------------------- privileged


def test_privileged(node):  # noqa: F811
    pod = run_pod(node, privileged=True)
    runtime_default = api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.RuntimeDefault)
    # As the kubelet would send for an unprivileged container; a privileged one ignores them.
    confined = dict(masked_paths=KUBELET_MASKED, readonly_paths=KUBELET_READONLY, seccomp=runtime_default)
    priv = start(node, pod, "priv", api_pb2.LinuxContainerSecurityContext(privileged=True, **confined))
    plain = start(node, pod, "plain", api_pb2.LinuxContainerSecurityContext(**confined))

    got = caps(node, priv)
    assert got["CapEff"] == got["CapBnd"] == daemon_caps(node), {k: hex(v) for k, v in got.items()}
    # The host's devices.
    devices = [d for d in ("loop-control", "kmsg", "full") if os.path.exists(f"/dev/{d}")]
    assert devices
    listing = "; ".join(f"test -c /dev/{d} && echo {d}" for d in devices)
    assert sh(node, priv, listing).split() == devices
    assert sh(node, plain, listing + "; true").split() == ["full"] * ("full" in devices)
    # No masked paths.
    masked = "cat /proc/timer_list | wc -c; ls /sys/firmware | wc -l"
    assert "0" not in sh(node, priv, masked).split()
    assert sh(node, plain, masked).split() == ["0", "0"]
    # /sys read-write.
    sys_mount = "grep ' /sys sysfs ' /proc/self/mounts | cut -d' ' -f4 | cut -d, -f1"
    assert sh(node, priv, sys_mount) == "rw\n"
    assert sh(node, plain, sys_mount) == "ro\n"
    # No seccomp filter, although RuntimeDefault was asked.
    assert proc_status(node, priv)["Seccomp"] == "0"
    assert proc_status(node, plain)["Seccomp"] == "2"


def test_privileged_container_needs_a_privileged_pod(node):  # noqa: F811
    pod = run_pod(node)
    refused(node, pod, api_pb2.LinuxContainerSecurityContext(privileged=True), "privileged")


# ---------------------------------------------------------------- no_new_privs


def test_no_new_privs(node):  # noqa: F811
    pod = run_pod(node)
    on = start(node, pod, "on", api_pb2.LinuxContainerSecurityContext(no_new_privs=True))
    off = start(node, pod, "off", api_pb2.LinuxContainerSecurityContext(no_new_privs=False))
    assert proc_status(node, on)["NoNewPrivs"] == "1"
    assert proc_status(node, off)["NoNewPrivs"] == "0"


# ---------------------------------------------------------------- read-only rootfs


def test_readonly_rootfs_with_writable_volumes(node, tmp_path):  # noqa: F811
    pod = run_pod(node)
    data, deep = tmp_path / "data", tmp_path / "deep"
    data.mkdir()
    deep.mkdir()
    mounts = [
        api_pb2.Mount(host_path=str(data), container_path="/data"),
        # A mount point the image lacks: made before the rootfs turns read-only.
        api_pb2.Mount(host_path=str(deep), container_path="/not/in/image"),
        api_pb2.Mount(host_path=str(data), container_path="/ro-data", readonly=True),
    ]
    ro = start(node, pod, "ro", api_pb2.LinuxContainerSecurityContext(readonly_rootfs=True), mounts)
    for path in ("/x", "/tmp/x", "/etc/x", "/etc/hostname"):
        assert "Read-only file system" in fails(node, ro, f"echo hi > {path}"), path
    assert "Read-only file system" in fails(node, ro, "echo hi > /ro-data/x")
    sh(node, ro, "echo data > /data/f && echo deep > /not/in/image/f && echo shm > /dev/shm/f")
    assert (data / "f").read_text() == "data\n"
    assert (deep / "f").read_text() == "deep\n"
    assert sh(node, ro, "cat /dev/shm/f") == "shm\n"
    root = 'awk \'$2 == "/" {split($4, o, ","); print o[1]}\' /proc/self/mounts'
    assert sh(node, ro, root) == "ro\n"

    rw = start(node, pod, "rw", api_pb2.LinuxContainerSecurityContext(readonly_rootfs=False))
    assert sh(node, rw, "echo hi > /x && echo hi > /tmp/x && cat /x") == "hi\n"
    assert sh(node, rw, root) == "rw\n"


# ---------------------------------------------------------------- masked and read-only paths


def test_masked_and_readonly_paths_as_sent(node, tmp_path):  # noqa: F811
    pod = run_pod(node)
    (tmp_path / "secret").write_text("s3cret\n")
    volume = [api_pb2.Mount(host_path=str(tmp_path), container_path="/data")]
    custom = api_pb2.LinuxContainerSecurityContext(masked_paths=["/etc/group", "/data"], readonly_paths=["/tmp"])
    cid = start(node, pod, "custom", custom, volume)
    assert sh(node, cid, "cat /etc/group") == ""
    assert sh(node, cid, "ls -A /data") == ""
    assert "Read-only file system" in fails(node, cid, "echo hi > /tmp/x")
    assert "Read-only file system" in fails(node, cid, "echo hi > /data/x")
    assert sh(node, cid, "echo hi > /dev/shm/x && cat /dev/shm/x") == "hi\n"

    kubelet = api_pb2.LinuxContainerSecurityContext(masked_paths=KUBELET_MASKED, readonly_paths=KUBELET_READONLY)
    default = start(node, pod, "default", kubelet, volume)
    assert sh(node, default, "cat /etc/group; ls -A /data") == "root:x:0:\nnogroup:x:65534:\nsecret\n"
    assert sh(node, default, "stat -c %F /proc/timer_list /proc/keys") == "character special file\n" * 2
    assert sh(node, default, "cat /proc/timer_list /proc/keys | wc -c; ls -A /sys/firmware") == "0\n"
    assert "Read-only file system" in fails(node, default, "echo 1 > /proc/sys/kernel/shm_rmid_forced")
    assert sh(node, default, "echo hi > /tmp/x && cat /tmp/x") == "hi\n"

    for field in ("masked_paths", "readonly_paths"):
        for bad in ("etc/group", "/etc/\0group"):
            refused(node, pod, api_pb2.LinuxContainerSecurityContext(**{field: [bad]}), field, repr(bad))

    # Empty lists, as the kubelet sends for the Unmasked proc mount type: nothing masked.
    unmasked = start(node, pod, "unmasked", api_pb2.LinuxContainerSecurityContext(), volume)
    assert "0" not in sh(node, unmasked, "cat /proc/timer_list | wc -c; ls /sys/firmware | wc -l").split()
    # /proc/sys is writable (the pod's own IPC namespace: the host is untouched).
    with open("/proc/sys/kernel/shm_rmid_forced") as f:
        host_value = f.read()
    assert sh(node, unmasked, "echo 1 > /proc/sys/kernel/shm_rmid_forced && cat /proc/sys/kernel/shm_rmid_forced") == (
        "1\n"
    )
    with open("/proc/sys/kernel/shm_rmid_forced") as f:
        assert f.read() == host_value


# ---------------------------------------------------------------- Localhost seccomp profiles


def test_bad_localhost_seccomp_profiles_are_refused(node, tmp_path):  # noqa: F811
    pod = run_pod(node)
    (tmp_path / "notjson.json").write_text("defaultAction: SCMP_ACT_ALLOW\n")
    (tmp_path / "dir.json").mkdir()

    def local(ref: str) -> api_pb2.LinuxContainerSecurityContext:
        return api_pb2.LinuxContainerSecurityContext(
            seccomp=api_pb2.SecurityProfile(profile_type=api_pb2.SecurityProfile.Localhost, localhost_ref=ref)
        )

    refused(node, pod, local(str(tmp_path / "notjson.json")), "notjson.json", "JSON")
    refused(node, pod, local(str(tmp_path / "dir.json")), "dir.json", "not a regular file")
    refused(node, pod, local("profiles/relative.json"), "relative.json", "absolute")
    refused(node, pod, local(f"{tmp_path}/../{tmp_path.name}/notjson.json"), "'..'")
    refused(node, pod, local(""), "absolute")
