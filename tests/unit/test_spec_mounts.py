"""spec_mounts and spec_devices: mount order and options, CRI mounts and propagation, devices from the host."""

from __future__ import annotations

import os
import stat

import pytest

from pycrio import spec
from pycrio.cri import api_pb2
from pycrio.errors import InvalidArgument, Unimplemented
from pycrio.spec_devices import DEFAULT_DEVICE_RULES, cri_devices, host_devices
from pycrio.spec_mounts import cri_mounts, default_mounts, merge_mounts
from tests.support.spec_facts import (
    check_oci_shape,
    container_config,
    device_numbers,
    image_facts,
    make_rootfs,
    runtime_facts,
    sandbox_facts,
)


@pytest.fixture
def rootfs(tmp_path):
    return make_rootfs(tmp_path / "rootfs")


def build(rootfs, config=None, **sandbox):
    config = config or container_config()
    if not config.command:
        config.command.append("/bin/sh")
    out = spec.container_spec("c1", config, sandbox_facts(**sandbox), image_facts(rootfs), runtime_facts())
    check_oci_shape(out)
    return out


def by_destination(out):
    return {m["destination"]: m for m in out["mounts"]}


# ---------------------------------------------------------------- default mounts

BASE_ORDER = ["/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/dev/shm"]


def test_default_mounts_order_and_options(rootfs):
    out = build(rootfs)
    assert [m["destination"] for m in out["mounts"]] == BASE_ORDER
    m = by_destination(out)
    assert m["/proc"] == {
        "destination": "/proc",
        "type": "proc",
        "source": "proc",
        "options": ["nosuid", "noexec", "nodev"],
    }
    assert m["/dev"]["type"] == "tmpfs" and m["/dev"]["options"] == ["nosuid", "strictatime", "mode=755", "size=65536k"]
    assert m["/dev/pts"]["type"] == "devpts"
    assert m["/dev/pts"]["options"] == ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
    assert m["/dev/mqueue"]["type"] == "mqueue"
    assert m["/sys"]["type"] == "sysfs" and m["/sys"]["options"] == ["nosuid", "noexec", "nodev", "ro"]
    assert m["/sys/fs/cgroup"]["type"] == "cgroup" and "ro" in m["/sys/fs/cgroup"]["options"]
    assert m["/dev/shm"]["type"] == "tmpfs" and "mode=1777" in m["/dev/shm"]["options"]


def test_privileged_gets_writable_sys_and_cgroup(rootfs):
    config = container_config()
    config.linux.security_context.privileged = True
    m = by_destination(build(rootfs, config, privileged=True))
    assert m["/sys"]["options"][-1] == "rw" and m["/sys/fs/cgroup"]["options"][-1] == "rw"


def test_pod_files_and_shm_are_bound(rootfs):
    out = build(
        rootfs,
        shm_path="/run/pod/shm",
        resolv_conf_path="/run/pod/resolv.conf",
        hostname_path="/run/pod/hostname",
        hosts_path="/run/pod/hosts",
    )
    assert [m["destination"] for m in out["mounts"]] == [*BASE_ORDER, "/etc/resolv.conf", "/etc/hostname", "/etc/hosts"]
    m = by_destination(out)
    assert m["/dev/shm"] == {
        "destination": "/dev/shm",
        "type": "bind",
        "source": "/run/pod/shm",
        "options": ["rbind", "rprivate", "nosuid", "noexec", "nodev", "rw"],
    }
    for dest, src in (("/etc/resolv.conf", "resolv.conf"), ("/etc/hostname", "hostname"), ("/etc/hosts", "hosts")):
        assert m[dest]["source"] == f"/run/pod/{src}" and m[dest]["options"][:2] == ["rbind", "rprivate"]
        assert m[dest]["options"][-1] == "rw"


def test_pod_files_are_read_only_with_a_read_only_rootfs():
    mounts = default_mounts(
        privileged=False,
        readonly_rootfs=True,
        shm_path=None,
        resolv_conf_path="/r",
        hostname_path="/h",
        hosts_path=None,
    )
    assert [m["options"][-1] for m in mounts if m["destination"].startswith("/etc/")] == ["ro", "ro"]


# ---------------------------------------------------------------- CRI mounts


@pytest.fixture
def mountinfo(tmp_path):
    """A mountinfo where tmp_path/shared is a shared mount, tmp_path/slave a slave, the rest private."""
    for name in ("shared", "slave", "private"):
        (tmp_path / name / "sub").mkdir(parents=True)
    path = tmp_path / "mountinfo"
    real = os.path.realpath(tmp_path)
    path.write_text(
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        f"50 27 254:0 /x {real}/shared rw,relatime shared:7 - ext4 /dev/vda rw\n"
        f"51 27 254:0 /y {real}/slave rw,relatime master:7 - ext4 /dev/vda rw\n"
    )
    return str(path)


def mount(host, container, **kw):
    return api_pb2.Mount(host_path=str(host), container_path=container, **kw)


PROPAGATION_CASES = [
    # (host dir, CRI propagation, readonly) -> (options, rootfsPropagation)
    ("private", api_pb2.PROPAGATION_PRIVATE, False, ["rbind", "rprivate", "rw"], None),
    ("private", api_pb2.PROPAGATION_PRIVATE, True, ["rbind", "rprivate", "ro"], None),
    ("shared", api_pb2.PROPAGATION_HOST_TO_CONTAINER, False, ["rbind", "rslave", "rw"], None),
    ("slave/sub", api_pb2.PROPAGATION_HOST_TO_CONTAINER, True, ["rbind", "rslave", "ro"], None),
    ("shared/sub", api_pb2.PROPAGATION_BIDIRECTIONAL, False, ["rbind", "rshared", "rw"], "shared"),
]


@pytest.mark.parametrize("host,propagation,readonly,options,rootfs_propagation", PROPAGATION_CASES)
def test_cri_mount_options(tmp_path, mountinfo, host, propagation, readonly, options, rootfs_propagation):
    out, rp = cri_mounts([mount(tmp_path / host, "/data", propagation=propagation, readonly=readonly)], mountinfo)
    assert out == [{"destination": "/data", "type": "bind", "source": str(tmp_path / host), "options": options}]
    assert rp == rootfs_propagation


@pytest.mark.parametrize(
    "host,propagation,state",
    [
        ("private", api_pb2.PROPAGATION_BIDIRECTIONAL, "private"),
        ("slave", api_pb2.PROPAGATION_BIDIRECTIONAL, "slave"),
        ("private/sub", api_pb2.PROPAGATION_HOST_TO_CONTAINER, "private"),
    ],
)
def test_propagation_needs_a_propagating_host_mount(tmp_path, mountinfo, host, propagation, state):
    with pytest.raises(InvalidArgument, match=f"it is {state}"):
        cri_mounts([mount(tmp_path / host, "/data", propagation=propagation)], mountinfo)


def test_bidirectional_anywhere_makes_the_rootfs_shared(tmp_path, mountinfo):
    mounts = [
        mount(tmp_path / "slave", "/a", propagation=api_pb2.PROPAGATION_HOST_TO_CONTAINER),
        mount(tmp_path / "shared", "/b", propagation=api_pb2.PROPAGATION_BIDIRECTIONAL),
        mount(tmp_path / "private", "/c"),
    ]
    _, rp = cri_mounts(mounts, mountinfo)
    assert rp == "shared"


def test_recursive_read_only_binds_the_staged_mount_read_only(tmp_path, mountinfo):
    # runc 1.1 has no "rro": pycrio.volumes stages a recursively read-only rbind, bound "rbind,ro" here.
    mounts = [mount(tmp_path, "/plain"), mount(tmp_path, "/data", readonly=True, recursive_read_only=True)]
    out, _ = cri_mounts(mounts, mountinfo, staged={1: "/run/bundle/volumes/1"})
    assert out[1] == {
        "destination": "/data",
        "type": "bind",
        "source": "/run/bundle/volumes/1",
        "options": ["rbind", "rprivate", "ro"],
    }
    assert out[0]["source"] == str(tmp_path)
    with pytest.raises(Unimplemented, match="recursive read-only mounts need a staged mount"):
        cri_mounts(mounts, mountinfo)


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"readonly": False}, "recursive_read_only needs readonly: true"),
        (
            {"readonly": True, "propagation": api_pb2.PROPAGATION_HOST_TO_CONTAINER},
            "needs propagation PROPAGATION_PRIVATE, not PROPAGATION_HOST_TO_CONTAINER",
        ),
        (
            {"readonly": True, "propagation": api_pb2.PROPAGATION_BIDIRECTIONAL},
            "not PROPAGATION_BIDIRECTIONAL",
        ),
    ],
)
def test_recursive_read_only_refusals(tmp_path, mountinfo, kw, match):
    with pytest.raises(InvalidArgument, match=match):
        cri_mounts([mount(tmp_path / "shared", "/d", recursive_read_only=True, **kw)], mountinfo, staged={0: "/s"})


def test_image_volume_binds_the_staged_image_read_only():
    image = api_pb2.ImageSpec(image="sha256:" + "a" * 64)
    m = api_pb2.Mount(container_path="/img/", image=image, readonly=True)
    out, _ = cri_mounts([m], staged={0: "/run/bundle/volumes/0/etc"})
    assert out == [
        {
            "destination": "/img",
            "type": "bind",
            "source": "/run/bundle/volumes/0/etc",
            "options": ["rbind", "rprivate", "ro"],
        }
    ]


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"readonly": False}, "must be readonly"),
        ({"readonly": True, "image_sub_path": "/etc"}, "must be a relative path"),
        ({"readonly": True, "image_sub_path": "etc/../../x"}, "without '..'"),
        ({"readonly": True, "image_sub_path": ".."}, "without '..'"),
    ],
)
def test_image_volume_refusals(kw, match):
    m = api_pb2.Mount(container_path="/img", image=api_pb2.ImageSpec(image="busybox"), **kw)
    with pytest.raises(InvalidArgument, match=match):
        cri_mounts([m], staged={0: "/s"})


@pytest.mark.parametrize(
    "m,error,match",
    [
        (mount("/nonexistent/pycrio-test", "/data"), InvalidArgument, "host_path /nonexistent/pycrio-test: no such"),
        (mount("/tmp", "data"), InvalidArgument, "container_path 'data': must be an absolute path"),
        (mount("/tmp", ""), InvalidArgument, "container_path ''"),
        (mount("tmp", "/data"), InvalidArgument, "host_path 'tmp'"),
        (
            api_pb2.Mount(container_path="/img", readonly=True, image=api_pb2.ImageSpec(image="sha256:" + "a" * 64)),
            Unimplemented,
            "image volumes need a staged mount",
        ),
        (
            mount("/tmp", "/data", uidMappings=[api_pb2.IDMapping(host_id=1000, container_id=0, length=1)]),
            Unimplemented,
            "id-mapped",
        ),
        (mount("/tmp", "/data", propagation=7), InvalidArgument, "unknown propagation 7"),
    ],
)
def test_cri_mount_refusals(m, error, match):
    with pytest.raises(error, match=match):
        cri_mounts([m])


def test_selinux_relabel_is_ignored(tmp_path):
    out, _ = cri_mounts([mount(tmp_path, "/data", selinux_relabel=True)])
    assert out[0]["options"] == ["rbind", "rprivate", "rw"]


def test_cri_mounts_follow_defaults_and_replace_same_destination(rootfs, tmp_path):
    hosts = tmp_path / "kubelet-hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    config = container_config(
        mounts=[
            mount(tmp_path, "/data/"),
            mount(hosts, "/etc/hosts", readonly=True),
            mount(tmp_path, "/dev/shm"),
        ]
    )
    out = build(rootfs, config, hosts_path="/run/pod/hosts", resolv_conf_path="/run/pod/resolv.conf")
    dests = [m["destination"] for m in out["mounts"]]
    assert dests == [*BASE_ORDER[:-1], "/etc/resolv.conf", "/data", "/etc/hosts", "/dev/shm"]
    m = by_destination(out)
    assert m["/etc/hosts"]["source"] == str(hosts) and m["/etc/hosts"]["options"] == ["rbind", "rprivate", "ro"]
    assert m["/dev/shm"]["source"] == str(tmp_path)


def test_merge_mounts_keeps_the_last_of_a_destination():
    a = {"destination": "/x", "source": "1"}
    b = {"destination": "/y", "source": "2"}
    c = {"destination": "/x", "source": "3"}
    assert merge_mounts([a, b], [c]) == [b, c]


def test_image_volumes_are_not_mounted(rootfs):
    out = spec.container_spec(
        "c1",
        container_config(command=["/bin/sh"]),
        sandbox_facts(),
        image_facts(rootfs, Volumes={"/var/lib/data": {}}),
        runtime_facts(),
    )
    assert "/var/lib/data" not in by_destination(out)


# ---------------------------------------------------------------- devices


def device(host, container="", permissions="rwm"):
    return api_pb2.Device(host_path=host, container_path=container, permissions=permissions)


def test_cri_devices_from_real_host_devices(rootfs):
    config = container_config(devices=[device("/dev/null", "/dev/mynull", "rw"), device("/dev/zero", "/dev/zero", "r")])
    out = build(rootfs, config)
    null_st = os.stat("/dev/null")
    assert out["linux"]["devices"] == [
        {
            "path": "/dev/mynull",
            "type": "c",
            "major": 1,
            "minor": 3,
            "fileMode": stat.S_IMODE(null_st.st_mode),
            "uid": null_st.st_uid,
            "gid": null_st.st_gid,
        },
        {
            "path": "/dev/zero",
            "type": "c",
            "major": 1,
            "minor": 5,
            "fileMode": stat.S_IMODE(os.stat("/dev/zero").st_mode),
            "uid": 0,
            "gid": 0,
        },
    ]
    rules = out["linux"]["resources"]["devices"]
    assert rules[: len(DEFAULT_DEVICE_RULES)] == list(DEFAULT_DEVICE_RULES)
    assert rules[len(DEFAULT_DEVICE_RULES) :] == [
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"},
    ]


def test_default_device_rules_deny_then_allow_the_standard_set(rootfs):
    rules = build(rootfs)["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    allowed = {(r.get("type"), r.get("major"), r.get("minor")) for r in rules[1:] if r["access"] == "rwm"}
    for numbers in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (136, None)):
        assert ("c", *numbers) in allowed, numbers
    assert device_numbers("/dev/null") == (1, 3)
    assert build(rootfs)["linux"]["devices"] == []


def test_device_container_path_defaults_to_host_path_and_permissions_to_rwm():
    devices, rules = cri_devices([device("/dev/full", "", "")], privileged=False)
    assert devices[0]["path"] == "/dev/full" and rules[-1]["access"] == "rwm"


@pytest.mark.parametrize(
    "d,match",
    [
        (device("/dev/pycrio-missing", "/dev/x"), "device /dev/pycrio-missing: No such file"),
        (device("/etc/hostname", "/dev/x"), "not a character or block device"),
        (device("/dev/null", "/dev/x", "rwx"), "permissions 'rwx'"),
        (device("/dev/null", "/dev/x", "rr"), "permissions 'rr'"),
        (device("/dev/null", "dev/x"), "must be absolute"),
        (device("dev/null", "/dev/x"), "must be absolute"),
    ],
)
def test_device_refusals(d, match):
    with pytest.raises(InvalidArgument, match=match):
        cri_devices([d], privileged=False)


def test_device_directory_brings_its_devices(tmp_path):
    tree = tmp_path / "devs"
    (tree / "sub").mkdir(parents=True)
    os.mknod(tree / "a", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(tree / "sub" / "b", 0o640 | stat.S_IFBLK, os.makedev(7, 200))
    (tree / "plain").write_text("x")
    os.symlink("/dev/zero", tree / "link")
    devices, rules = cri_devices([device(str(tree), "/dev/grp", "rw")], privileged=False)
    assert [(d["path"], d["type"], d["major"], d["minor"], d["fileMode"]) for d in devices] == [
        ("/dev/grp/a", "c", 1, 3, 0o600),
        ("/dev/grp/sub/b", "b", 7, 200, 0o640),
    ]
    assert rules[-2:] == [
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
        {"allow": True, "type": "b", "major": 7, "minor": 200, "access": "rw"},
    ]


def test_privileged_gets_every_host_device_and_no_cgroup_restriction(rootfs):
    config = container_config(devices=[device("/dev/zero", "/dev/null", "r")])
    config.linux.security_context.privileged = True
    out = build(rootfs, config, privileged=True)
    devices = {d["path"]: d for d in out["linux"]["devices"]}
    assert devices["/dev/zero"]["minor"] == 5
    assert devices["/dev/null"]["minor"] == 5  # the CRI device replaced the host's at that path
    assert not any(p.startswith(("/dev/pts/", "/dev/shm/")) for p in devices)
    assert "/dev/console" not in devices and "/dev/stdin" not in devices  # symlinks skipped
    assert out["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]


def test_host_devices_walk_matches_the_real_dev():
    found = {d["path"]: d for d in host_devices()}
    for path in ("/dev/null", "/dev/zero", "/dev/full", "/dev/urandom"):
        assert (found[path]["major"], found[path]["minor"]) == device_numbers(path)
    for path in found:
        assert not os.path.islink(path)
