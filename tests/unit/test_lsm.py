"""pycrio/lsm.py: AppArmor and SELinux requests, on hosts with and without the LSM."""

from __future__ import annotations

import pytest

from pycrio import lsm, spec
from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition, InvalidArgument
from tests.support.spec_facts import container_config, image_facts, make_rootfs, runtime_facts, sandbox_facts

P = api_pb2.SecurityProfile


def _sc(**kw) -> api_pb2.LinuxContainerSecurityContext:
    return api_pb2.LinuxContainerSecurityContext(**kw)


@pytest.mark.parametrize(
    "sc",
    [
        _sc(),
        _sc(apparmor=P(profile_type=P.RuntimeDefault)),
        _sc(apparmor=P(profile_type=P.Unconfined)),
        _sc(apparmor_profile="runtime/default"),
        _sc(apparmor_profile="unconfined"),
    ],
)
def test_default_and_unconfined_are_accepted_with_or_without_apparmor(sc):
    assert lsm.apparmor_profile(sc, enabled=False) is None
    assert lsm.apparmor_profile(sc, enabled=True) is None


def test_localhost_profile_is_applied_where_apparmor_runs_and_refused_where_not():
    for sc in (_sc(apparmor=P(profile_type=P.Localhost, localhost_ref="k8s-deny-write")),
               _sc(apparmor_profile="localhost/k8s-deny-write")):  # fmt: skip
        assert lsm.apparmor_profile(sc, enabled=True) == "k8s-deny-write"
        with pytest.raises(FailedPrecondition, match="'k8s-deny-write' requested, but AppArmor is not enabled"):
            lsm.apparmor_profile(sc, enabled=False)


def test_the_field_wins_over_the_legacy_string():
    sc = _sc(apparmor=P(profile_type=P.Unconfined), apparmor_profile="localhost/x")
    assert lsm.apparmor_profile(sc, enabled=False) is None


@pytest.mark.parametrize(
    ("sc", "words"),
    [
        (_sc(apparmor=P(profile_type=P.Localhost)), "needs localhost_ref"),
        (_sc(apparmor=P(profile_type=7)), "unknown"),
        (_sc(apparmor_profile="docker-default"), "unknown"),
        (_sc(apparmor_profile="localhost/"), "unknown"),
    ],
)
def test_malformed_apparmor_requests_are_invalid(sc, words):
    with pytest.raises(InvalidArgument, match=words):
        lsm.apparmor_profile(sc, enabled=True)


def test_selinux_options_refused_without_selinux_and_empty_ones_accepted():
    lsm.check_selinux(api_pb2.SELinuxOption(), "pod", enabled=False)
    options = api_pb2.SELinuxOption(type="spc_t", level="s0:c1,c2")
    with pytest.raises(FailedPrecondition, match=r"pod: SELinux options \(type=spc_t, level=s0:c1,c2\) requested"):
        lsm.check_selinux(options, "pod", enabled=False)
    with pytest.raises(FailedPrecondition, match="not supported by pycrio"):
        lsm.check_selinux(options, "pod", enabled=True)


def test_host_probes_read_the_kernel_files(tmp_path):
    flag = tmp_path / "enabled"
    flag.write_text("Y\n")
    assert lsm.apparmor_enabled(str(flag)) is True
    flag.write_text("N\n")
    assert lsm.apparmor_enabled(str(flag)) is False
    assert lsm.apparmor_enabled(str(tmp_path / "missing")) is False
    assert lsm.selinux_enabled(str(tmp_path / "missing")) is False


def test_container_spec_refuses_what_this_host_cannot_confine(tmp_path):
    config = container_config()
    config.linux.security_context.selinux_options.type = "container_t"
    rootfs = make_rootfs(tmp_path / "rootfs")
    with pytest.raises(FailedPrecondition, match="SELinux"):
        spec.container_spec("c1", config, sandbox_facts(), image_facts(rootfs, Cmd=["/bin/sh"]), runtime_facts())
