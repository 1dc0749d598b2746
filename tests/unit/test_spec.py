"""spec.container_spec and spec.pause_spec: process, namespaces, sysctls, annotations, security, shape."""

from __future__ import annotations

import pytest

from pycrio import caps, spec
from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition, InvalidArgument
from tests.support.spec_facts import (
    DAEMON_CAPS,
    check_oci_shape,
    container_config,
    image_facts,
    make_rootfs,
    runtime_facts,
    sandbox_facts,
)


@pytest.fixture
def rootfs(tmp_path):
    return make_rootfs(tmp_path / "rootfs")


def build(rootfs, config=None, sandbox=None, runtime=None, container_id="c0ffee", **image_config):
    """container_spec with defaults, its shape checked."""
    image_config.setdefault("Cmd", ["/bin/sh"])
    out = spec.container_spec(
        container_id,
        config if config is not None else container_config(),
        sandbox or sandbox_facts(),
        image_facts(rootfs, **image_config),
        runtime or runtime_facts(),
    )
    check_oci_shape(out)
    return out


def kv(key, value):
    return api_pb2.KeyValue(key=key, value=value if isinstance(value, bytes) else value.encode())


# ---------------------------------------------------------------- process.args

ARGS_CASES = [
    # (CRI command, CRI args, image Entrypoint, image Cmd) -> args
    (["run"], [], ["/ep"], ["cmd"], ["run"]),
    (["run"], ["a", "b"], ["/ep"], ["cmd"], ["run", "a", "b"]),
    ([], ["a"], ["/ep", "x"], ["cmd"], ["/ep", "x", "a"]),
    ([], ["a"], None, ["cmd"], ["a"]),
    ([], [], ["/ep"], ["cmd", "c2"], ["/ep", "cmd", "c2"]),
    ([], [], None, ["cmd"], ["cmd"]),
    ([], [], ["/ep"], None, ["/ep"]),
    (["run"], [], None, None, ["run"]),
]


@pytest.mark.parametrize("command,args,entrypoint,cmd,expected", ARGS_CASES)
def test_args_follow_kubernetes_rules(rootfs, command, args, entrypoint, cmd, expected):
    config = container_config(command=command, args=args)
    out = build(rootfs, config, Entrypoint=entrypoint, Cmd=cmd)
    assert out["process"]["args"] == expected


@pytest.mark.parametrize("entrypoint,cmd", [(None, None), ([], []), (None, [])])
def test_no_command_at_all_is_refused(rootfs, entrypoint, cmd):
    with pytest.raises(InvalidArgument, match="no command specified"):
        build(rootfs, container_config(), Entrypoint=entrypoint, Cmd=cmd)


def test_command_with_nul_or_empty_program_is_refused(rootfs):
    with pytest.raises(InvalidArgument, match="NUL"):
        build(rootfs, container_config(command=["sh", "a\0b"]))
    with pytest.raises(InvalidArgument, match="empty string"):
        build(rootfs, container_config(command=[""]))


def test_image_command_that_is_not_a_list_of_strings_is_refused(rootfs):
    with pytest.raises(InvalidArgument, match="Cmd"):
        build(rootfs, container_config(), Cmd="sh -c true")


# ---------------------------------------------------------------- process.env


def test_env_image_then_hostname_then_cri_in_place(rootfs):
    config = container_config(envs=[kv("B", "cri-b"), kv("NEW", "n"), kv("A", "cri-a")])
    out = build(rootfs, config, Env=["PATH=/bin", "A=img-a", "B=img-b", "C=img-c"])
    assert out["process"]["env"] == ["PATH=/bin", "A=cri-a", "B=cri-b", "C=img-c", "HOSTNAME=pod-host", "NEW=n"]


def test_env_default_path_when_nobody_sets_it(rootfs):
    out = build(rootfs, container_config(envs=[kv("X", "1")]), Env=["A=1"])
    assert out["process"]["env"] == [f"PATH={spec.DEFAULT_PATH}", "A=1", "HOSTNAME=pod-host", "X=1"]
    out = build(rootfs, container_config(envs=[kv("PATH", "/opt/bin")]))
    assert out["process"]["env"] == ["HOSTNAME=pod-host", "PATH=/opt/bin"]


def test_env_hostname_replaces_image_value_and_cri_replaces_it(rootfs):
    out = build(rootfs, container_config(), Env=["PATH=/bin", "HOSTNAME=from-image"])
    assert out["process"]["env"] == ["PATH=/bin", "HOSTNAME=pod-host"]
    out = build(rootfs, container_config(envs=[kv("HOSTNAME", "mine")]), Env=["PATH=/bin"])
    assert out["process"]["env"] == ["PATH=/bin", "HOSTNAME=mine"]
    out = build(rootfs, container_config(), sandbox_facts(hostname=""), Env=["PATH=/bin"])
    assert out["process"]["env"] == ["PATH=/bin"]


def test_image_env_with_nul_is_refused(rootfs):
    with pytest.raises(InvalidArgument, match="Env entry 'A=x'…: contains a NUL"):
        build(rootfs, container_config(), Env=["A=x\0y"])


def test_env_values_keep_equals_signs_and_utf8(rootfs):
    config = container_config(envs=[kv("Q", "a=b=c"), kv("U", "héllo ✓".encode()), kv("E", b"")])
    out = build(rootfs, config, Env=["PATH=/bin", "BARE"])
    assert out["process"]["env"] == ["PATH=/bin", "BARE", "HOSTNAME=pod-host", "Q=a=b=c", "U=héllo ✓", "E="]


@pytest.mark.parametrize(
    "env,match",
    [
        (kv("BAD", b"\xff\xfe"), "BAD: value is not valid UTF-8"),
        (kv("BAD", b"caf\xc3"), "BAD: value is not valid UTF-8"),
        (kv("BAD", "a\0b"), "BAD: value contains a NUL"),
        (kv("", "x"), "name ''"),
        (kv("A=B", "x"), "name 'A=B'"),
    ],
)
def test_env_refusals(rootfs, env, match):
    with pytest.raises(InvalidArgument, match=match):
        build(rootfs, container_config(envs=[env]))


# ---------------------------------------------------------------- cwd, terminal, root


@pytest.mark.parametrize(
    "cri,image,expected",
    [
        ("/work", "/img", "/work"),
        ("", "/img", "/img"),
        ("", None, "/"),
        ("", "rel/dir", "/rel/dir"),
        ("/a/../b/", "", "/b"),
    ],
)
def test_cwd(rootfs, cri, image, expected):
    out = build(rootfs, container_config(working_dir=cri), WorkingDir=image)
    assert out["process"]["cwd"] == expected


def test_relative_cri_working_dir_is_refused(rootfs):
    with pytest.raises(InvalidArgument, match="working_dir"):
        build(rootfs, container_config(working_dir="rel"))


@pytest.mark.parametrize("tty", [False, True])
def test_terminal_follows_tty(rootfs, tty):
    assert build(rootfs, container_config(tty=tty, stdin=True))["process"]["terminal"] is tty


@pytest.mark.parametrize("readonly", [False, True])
def test_root_is_the_rootfs_and_readonly_follows_the_security_context(rootfs, readonly):
    config = container_config()
    config.linux.security_context.readonly_rootfs = readonly
    assert build(rootfs, config)["root"] == {"path": rootfs, "readonly": readonly}


def test_relative_rootfs_is_refused(rootfs):
    with pytest.raises(InvalidArgument, match="rootfs"):
        spec.container_spec("c", container_config(command=["x"]), sandbox_facts(), image_facts("rel"), runtime_facts())


# ---------------------------------------------------------------- capabilities and privileges


def caps_of(out):
    return out["process"]["capabilities"]


def test_default_capabilities_in_every_set_but_inheritable_and_ambient(rootfs):
    c = caps_of(build(rootfs))
    expected = caps.ordered("CAP_" + n for n in spec_default_caps())
    assert c["bounding"] == c["effective"] == c["permitted"] == expected
    assert c["inheritable"] == c["ambient"] == []


def spec_default_caps():
    from pycrio.config import DEFAULT_CAPABILITIES

    return DEFAULT_CAPABILITIES


def test_add_and_drop_from_the_security_context(rootfs):
    config = container_config()
    config.linux.security_context.capabilities.add_capabilities.extend(["net_admin", "CAP_SYS_TIME"])
    config.linux.security_context.capabilities.drop_capabilities.extend(["chown", "Kill"])
    c = caps_of(build(rootfs, config))
    assert "CAP_NET_ADMIN" in c["bounding"] and "CAP_SYS_TIME" in c["effective"]
    assert "CAP_CHOWN" not in c["permitted"] and "CAP_KILL" not in c["bounding"]


def test_privileged_gets_exactly_the_daemon_capabilities(rootfs):
    held = {"CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN"}
    config = container_config()
    config.linux.security_context.privileged = True
    config.linux.security_context.capabilities.drop_capabilities.append("SYS_ADMIN")  # ignored when privileged
    out = build(rootfs, config, sandbox_facts(privileged=True), runtime_facts(daemon_capabilities=held))
    c = caps_of(out)
    assert c["bounding"] == c["effective"] == c["permitted"] == caps.ordered(held)
    assert c["inheritable"] == c["ambient"] == []


def test_privileged_default_host_lacks_sys_resource(rootfs):
    config = container_config()
    config.linux.security_context.privileged = True
    c = caps_of(build(rootfs, config, sandbox_facts(privileged=True)))
    assert set(c["bounding"]) == DAEMON_CAPS and "CAP_SYS_RESOURCE" not in c["bounding"]


def test_privileged_container_in_unprivileged_pod_is_refused(rootfs):
    config = container_config()
    config.linux.security_context.privileged = True
    with pytest.raises(InvalidArgument, match="privileged pod"):
        build(rootfs, config, sandbox_facts(privileged=False))


def test_unknown_capability_is_refused(rootfs):
    config = container_config()
    config.linux.security_context.capabilities.add_capabilities.append("CAP_FLY")
    with pytest.raises(InvalidArgument, match="CAP_FLY"):
        build(rootfs, config)


def test_ambient_capabilities_go_in_every_set(rootfs):
    config = container_config()
    config.linux.security_context.capabilities.add_ambient_capabilities.append("NET_RAW")
    c = caps_of(build(rootfs, config))
    for name in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        assert "CAP_NET_RAW" in c[name]
    assert c["ambient"] == c["inheritable"] == ["CAP_NET_RAW"]


@pytest.mark.parametrize("no_new_privs", [False, True])
def test_no_new_privileges(rootfs, no_new_privs):
    config = container_config()
    config.linux.security_context.no_new_privs = no_new_privs
    assert build(rootfs, config)["process"]["noNewPrivileges"] is no_new_privs


# ---------------------------------------------------------------- oom_score_adj


@pytest.mark.parametrize(
    "requested,daemon,expected",
    [(0, 0, 0), (-998, 0, 0), (-998, -999, -998), (500, 0, 500), (1000, 0, 1000), (-1000, -1000, -1000), (3, 5, 5)],
)
def test_oom_score_adj_clamped_to_the_daemon_own(rootfs, requested, daemon, expected):
    config = container_config()
    config.linux.resources.oom_score_adj = requested
    out = build(rootfs, config, runtime=runtime_facts(daemon_oom_score_adj=daemon))
    assert out["process"]["oomScoreAdj"] == expected


@pytest.mark.parametrize("requested", [1001, -1001, 10**9])
def test_oom_score_adj_out_of_range_is_refused(rootfs, requested):
    config = container_config()
    config.linux.resources.oom_score_adj = requested
    with pytest.raises(InvalidArgument, match="oom_score_adj"):
        build(rootfs, config)


# ---------------------------------------------------------------- namespaces


def ns_of(out):
    return {n["type"]: n.get("path") for n in out["linux"]["namespaces"]}


@pytest.mark.parametrize(
    "mode,path,expected",
    [
        (api_pb2.POD, "/proc/42/ns/pid", "/proc/42/ns/pid"),
        (api_pb2.TARGET, "/proc/77/ns/pid", "/proc/77/ns/pid"),
        (api_pb2.CONTAINER, None, None),
    ],
)
def test_pid_namespace_modes(rootfs, mode, path, expected):
    out = build(rootfs, sandbox=sandbox_facts(pid_mode=mode, pid_ns_path=path))
    assert "pid" in ns_of(out) and ns_of(out)["pid"] == expected


def test_pid_namespace_node_is_the_host(rootfs):
    out = build(rootfs, sandbox=sandbox_facts(pid_mode=api_pb2.NODE))
    assert "pid" not in ns_of(out)


@pytest.mark.parametrize("mode", [api_pb2.POD, api_pb2.TARGET])
def test_pid_namespace_to_join_must_be_known(rootfs, mode):
    with pytest.raises(FailedPrecondition, match="pid_ns_path"):
        build(rootfs, sandbox=sandbox_facts(pid_mode=mode, pid_ns_path=None))


def test_pid_namespace_mode_out_of_enum_is_refused(rootfs):
    with pytest.raises(InvalidArgument, match="pid namespace mode 9"):
        build(rootfs, sandbox=sandbox_facts(pid_mode=9))


def test_pod_namespaces_are_joined_and_host_ones_omitted(rootfs):
    out = build(rootfs)
    assert ns_of(out) == {
        "mount": None,
        "pid": None,
        "network": "/run/pycrio/ns/net/sb0123",
        "ipc": "/run/pycrio/ns/ipc/sb0123",
        "uts": "/run/pycrio/ns/uts/sb0123",
    }
    out = build(rootfs, sandbox=sandbox_facts(netns_path=None, ipcns_path=None, utsns_path=None))
    assert ns_of(out) == {"mount": None, "pid": None}


@pytest.mark.parametrize("version,has_cgroupns", [(1, False), (2, True)])
def test_cgroup_namespace_only_on_v2(rootfs, version, has_cgroupns):
    out = build(rootfs, runtime=runtime_facts(cgroup_version=version))
    assert ("cgroup" in ns_of(out)) is has_cgroupns
    if has_cgroupns:
        assert ns_of(out)["cgroup"] is None


def test_container_spec_sets_no_hostname(rootfs):
    assert "hostname" not in build(rootfs)


# ---------------------------------------------------------------- sysctls


def test_pod_sysctls_are_copied(rootfs):
    sysctls = {"net.core.somaxconn": "1024", "kernel.shmmax": "65536", "net/ipv4/conf/eth0.1/forwarding": "1"}
    out = build(rootfs, sandbox=sandbox_facts(sysctls=sysctls))
    assert out["linux"]["sysctl"] == {
        "net.core.somaxconn": "1024",
        "kernel.shmmax": "65536",
        "net.ipv4.conf.eth0/1.forwarding": "1",
    }


@pytest.mark.parametrize(
    "facts,name,match",
    [
        ({"netns_path": None}, "net.core.somaxconn", "host's network namespace"),
        ({"ipcns_path": None}, "kernel.shmmax", "host's ipc namespace"),
        ({"ipcns_path": None}, "fs.mqueue.msg_max", "host's ipc namespace"),
        ({"utsns_path": None}, "kernel.domainname", "host's uts namespace"),
        ({}, "vm.swappiness", "not namespaced"),
        ({}, "kernel.panic", "not namespaced"),
    ],
)
def test_sysctl_refusals(rootfs, facts, name, match):
    with pytest.raises(InvalidArgument, match=match):
        build(rootfs, sandbox=sandbox_facts(sysctls={name: "1"}, **facts))


# ---------------------------------------------------------------- annotations


def test_annotations_copied_and_identifying_keys_added(rootfs):
    config = container_config(annotations={"a": "1", "io.kubernetes.cri.sandbox-id": "spoofed"})
    config.metadata.name = "web"
    config.image.user_specified_image = "docker.io/library/busybox:1.36"
    out = build(rootfs, config)
    assert out["annotations"] == {
        "a": "1",
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.sandbox-id": "sb0123",
        "io.kubernetes.cri.container-name": "web",
        "io.kubernetes.cri.image-name": "docker.io/library/busybox:1.36",
    }


# ---------------------------------------------------------------- security profiles, masked paths


def test_seccomp_runtime_default_gets_pycrio_profile(rootfs):
    config = container_config()
    config.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.RuntimeDefault
    sc = build(rootfs, config)["linux"]["seccomp"]
    assert sc["defaultAction"] == "SCMP_ACT_ERRNO" and sc["defaultErrnoRet"] == 1
    allowed = {n for r in sc["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r for n in r["names"]}
    assert "read" in allowed and "mount" not in allowed and "sethostname" not in allowed


@pytest.mark.parametrize("path", ["runtime/default", "docker/default"])
def test_seccomp_legacy_default_paths(rootfs, path):
    config = container_config()
    config.linux.security_context.seccomp_profile_path = path
    assert build(rootfs, config)["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"


@pytest.mark.parametrize("path", ["", "unconfined"])
def test_seccomp_unconfined_or_unset_means_no_filter(rootfs, path):
    config = container_config()
    config.linux.security_context.seccomp_profile_path = path
    assert "seccomp" not in build(rootfs, config)["linux"]
    config = container_config()
    config.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.Unconfined
    assert "seccomp" not in build(rootfs, config)["linux"]


def test_seccomp_field_wins_over_the_legacy_path(rootfs):
    config = container_config()
    config.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.Unconfined
    config.linux.security_context.seccomp_profile_path = "runtime/default"
    assert "seccomp" not in build(rootfs, config)["linux"]


def test_seccomp_default_opens_sys_admin_calls_only_with_sys_admin(rootfs):
    config = container_config()
    config.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.RuntimeDefault
    config.linux.security_context.capabilities.add_capabilities.append("SYS_ADMIN")
    sc = build(rootfs, config)["linux"]["seccomp"]
    allowed = {n for r in sc["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r for n in r["names"]}
    assert {"mount", "umount2", "sethostname", "unshare", "setns", "clone"} <= allowed


def test_seccomp_privileged_container_ignores_the_profile(rootfs, tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text(
        '{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}]}'
    )
    for kind in (api_pb2.SecurityProfile.RuntimeDefault, api_pb2.SecurityProfile.Localhost):
        config = container_config()
        config.linux.security_context.privileged = True
        config.linux.security_context.seccomp.profile_type = kind
        config.linux.security_context.seccomp.localhost_ref = str(profile)
        out = build(rootfs, config, sandbox=sandbox_facts(privileged=True))
        assert "seccomp" not in out["linux"]


def test_seccomp_localhost_profile_is_read(rootfs, tmp_path):
    profile = tmp_path / "p.json"
    rule = '{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}'
    profile.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [' + rule + "]}")
    config = container_config()
    config.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.Localhost
    config.linux.security_context.seccomp.localhost_ref = str(profile)
    expected = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}],
    }
    assert build(rootfs, config)["linux"]["seccomp"] == expected
    config = container_config()
    config.linux.security_context.seccomp_profile_path = f"localhost/{profile}"
    assert build(rootfs, config)["linux"]["seccomp"] == expected


def test_seccomp_localhost_errors(rootfs, tmp_path):
    missing = str(tmp_path / "missing.json")
    config = container_config()
    config.linux.security_context.seccomp.profile_type = api_pb2.SecurityProfile.Localhost
    config.linux.security_context.seccomp.localhost_ref = missing
    with pytest.raises(InvalidArgument, match="missing.json"):
        build(rootfs, config)
    config = container_config()
    config.linux.security_context.seccomp_profile_path = "localhost/p.json"
    with pytest.raises(InvalidArgument, match="absolute"):
        build(rootfs, config)
    config = container_config()
    config.linux.security_context.seccomp_profile_path = "bogus"
    with pytest.raises(InvalidArgument, match="bogus"):
        build(rootfs, config)


def test_apparmor_and_selinux_unconfined_or_default_add_nothing(rootfs):
    config = container_config()
    config.linux.security_context.apparmor.profile_type = api_pb2.SecurityProfile.Unconfined
    out = build(rootfs, config)
    assert "apparmorProfile" not in out["process"] and "selinuxLabel" not in out["process"]
    # A Localhost profile or a label on a host without the LSM: tests/unit/test_lsm.py.


def test_masked_and_readonly_paths_as_sent_and_none_when_privileged(rootfs):
    config = container_config()
    config.linux.security_context.masked_paths.extend(["/proc/kcore", "/sys/firmware"])
    config.linux.security_context.readonly_paths.extend(["/proc/sys"])
    out = build(rootfs, config)
    assert out["linux"]["maskedPaths"] == ["/proc/kcore", "/sys/firmware"]
    assert out["linux"]["readonlyPaths"] == ["/proc/sys"]
    config.linux.security_context.privileged = True
    out = build(rootfs, config, sandbox_facts(privileged=True))
    assert out["linux"]["maskedPaths"] == [] and out["linux"]["readonlyPaths"] == []


# ---------------------------------------------------------------- cgroups and resources through container_spec


@pytest.mark.parametrize(
    "manager,parent,expected",
    [
        ("cgroupfs", "/kubepods/burstable/pod1234", "/kubepods/burstable/pod1234/pycrio-c0ffee"),
        ("cgroupfs", "", "/pycrio/pycrio-c0ffee"),
        ("systemd", "kubepods-burstable-pod1234.slice", "kubepods-burstable-pod1234.slice:pycrio:c0ffee"),
    ],
)
def test_cgroups_path(rootfs, manager, parent, expected):
    out = build(rootfs, sandbox=sandbox_facts(cgroup_parent=parent), runtime=runtime_facts(cgroup_manager=manager))
    assert out["linux"]["cgroupsPath"] == expected


def test_resources_reach_the_spec(rootfs):
    config = container_config()
    r = config.linux.resources
    r.cpu_period, r.cpu_quota, r.cpu_shares = 100000, 50000, 512
    r.memory_limit_in_bytes, r.memory_swap_limit_in_bytes = 64 << 20, 64 << 20
    r.cpuset_cpus, r.cpuset_mems = "0-1", "0"
    r.hugepage_limits.add(page_size="2MB", limit=4 << 20)
    res = build(rootfs, config)["linux"]["resources"]
    assert res["cpu"] == {"shares": 512, "period": 100000, "quota": 50000, "cpus": "0-1", "mems": "0"}
    assert res["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert res["hugepageLimits"] == [{"pageSize": "2MB", "limit": 4 << 20}]
    assert res["devices"][0] == {"allow": False, "access": "rwm"}


def test_unset_resources_give_only_device_rules(rootfs):
    assert set(build(rootfs)["linux"]["resources"]) == {"devices"}


def test_unified_on_cgroup_v1_is_refused(rootfs):
    config = container_config()
    config.linux.resources.unified["memory.high"] = "1000000"
    with pytest.raises(InvalidArgument, match="cgroup v2"):
        build(rootfs, config)
    out = build(rootfs, config, runtime=runtime_facts(cgroup_version=2))
    assert out["linux"]["resources"]["unified"] == {"memory.high": "1000000"}


def test_bad_container_id_is_refused(rootfs):
    with pytest.raises(InvalidArgument, match="container id"):
        build(rootfs, container_id="../escape")


# ---------------------------------------------------------------- pause


def test_pause_spec(tmp_path):
    sandbox = sandbox_facts(sysctls={"net.ipv4.ip_forward": "1"})
    out = spec.pause_spec(sandbox, "/pause", runtime_facts(daemon_oom_score_adj=-500))
    check_oci_shape(out)
    p = out["process"]
    assert p["args"] == ["/pause"] and p["cwd"] == "/" and p["user"] == {"uid": 0, "gid": 0}
    assert p["terminal"] is False and p["noNewPrivileges"] is True
    assert all(v == [] for v in p["capabilities"].values()) and len(p["capabilities"]) == 5
    assert p["oomScoreAdj"] == -500  # -998 asked, clamped to the daemon's own
    assert out["root"] == {"path": "rootfs", "readonly": True}
    assert [m["destination"] for m in out["mounts"]] == ["/proc", "/dev"]
    assert ns_of(out) == {
        "mount": None,
        "pid": None,
        "network": "/run/pycrio/ns/net/sb0123",
        "ipc": "/run/pycrio/ns/ipc/sb0123",
        "uts": "/run/pycrio/ns/uts/sb0123",
    }
    assert out["hostname"] == "pod-host"
    linux = out["linux"]
    assert linux["cgroupsPath"] == "/kubepods/burstable/pod1234/pycrio-sb0123"
    assert linux["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert linux["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    assert "/proc/kcore" in linux["maskedPaths"] and "/proc/sys" in linux["readonlyPaths"]
    assert out["annotations"] == {
        "io.kubernetes.cri.container-type": "sandbox",
        "io.kubernetes.cri.sandbox-id": "sb0123",
    }


def test_pause_spec_oom_clamp_keeps_minus_998_when_allowed():
    out = spec.pause_spec(sandbox_facts(), "/pause", runtime_facts(daemon_oom_score_adj=-999))
    assert out["process"]["oomScoreAdj"] == -998


def test_pause_spec_host_namespaces_and_no_hostname():
    sandbox = sandbox_facts(netns_path=None, ipcns_path=None, utsns_path=None)
    out = spec.pause_spec(sandbox, "/pause", runtime_facts(cgroup_version=2), rootfs="/abs/rootfs")
    check_oci_shape(out)
    assert ns_of(out) == {"mount": None, "pid": None, "cgroup": None}
    assert "hostname" not in out and out["root"]["path"] == "/abs/rootfs"


def test_pause_spec_systemd_cgroup_and_refusals():
    out = spec.pause_spec(
        sandbox_facts(cgroup_parent="kubepods-besteffort-pod1.slice"),
        "/pause",
        runtime_facts(cgroup_manager="systemd"),
    )
    assert out["linux"]["cgroupsPath"] == "kubepods-besteffort-pod1.slice:pycrio:sb0123"
    with pytest.raises(InvalidArgument, match="pause binary"):
        spec.pause_spec(sandbox_facts(), "pause", runtime_facts())
    with pytest.raises(InvalidArgument, match="host's network"):
        spec.pause_spec(sandbox_facts(netns_path=None, sysctls={"net.core.somaxconn": "1"}), "/p", runtime_facts())


# ---------------------------------------------------------------- facts of this host


def test_runtime_facts_probe_on_this_host():
    facts = spec.RuntimeFacts.probe(["CHOWN"], "cgroupfs")
    assert facts.cgroup_version in (1, 2)
    assert facts.daemon_capabilities <= set(caps.CAPABILITIES) and "CAP_CHOWN" in facts.daemon_capabilities
    assert -1000 <= facts.daemon_oom_score_adj <= 1000
    assert facts.default_capabilities == ["CHOWN"] and facts.cgroup_manager == "cgroupfs"


def test_a_full_spec_passes_the_shape_check(rootfs):
    config = container_config(
        command=["/bin/app"],
        args=["--flag"],
        working_dir="/srv",
        envs=[kv("A", "1")],
        tty=True,
        labels={"l": "v"},
        annotations={"a": "b"},
        devices=[api_pb2.Device(host_path="/dev/null", container_path="/dev/xnull", permissions="rw")],
        mounts=[api_pb2.Mount(host_path=rootfs, container_path="/data", readonly=True)],
    )
    sc = config.linux.security_context
    sc.run_as_user.value = 1000
    sc.supplemental_groups.extend([5000])
    sc.masked_paths.append("/proc/kcore")
    config.linux.resources.memory_limit_in_bytes = 128 << 20
    sandbox = sandbox_facts(
        pid_mode=api_pb2.POD,
        pid_ns_path="/proc/1/ns/pid",
        resolv_conf_path="/run/pod/resolv.conf",
        hostname_path="/run/pod/hostname",
        hosts_path="/run/pod/hosts",
        shm_path="/run/pod/shm",
        sysctls={"net.ipv4.ip_forward": "1"},
    )
    out = build(rootfs, config, sandbox)
    assert out["ociVersion"] == "1.0.2"
    assert out["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 10, 29, 5000]}
