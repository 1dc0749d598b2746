"""spec_devices: the io.pycrio.devices annotation (parsing, allowed_devices, the pod's and the container's),
and its devices in the spec beside ContainerConfig.devices."""

from __future__ import annotations

import os

import pytest

from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from pycrio.spec_devices import (
    ANNOTATION_DEVICES,
    DEFAULT_DEVICE_RULES,
    annotation_devices,
    parse_devices_annotation,
)
from tests.support.spec_facts import container_config, runtime_facts, sandbox_facts
from tests.unit.test_spec import build, rootfs  # noqa: F401 - the fixture


def entries(value: str) -> list[tuple[str, str, str]]:
    return [(d.host_path, d.container_path, d.permissions) for d in parse_devices_annotation(value)]


@pytest.mark.parametrize(
    "value,expected",
    [
        ("", []),
        ("/dev/fuse", [("/dev/fuse", "/dev/fuse", "rwm")]),
        ("/dev/fuse:/dev/f", [("/dev/fuse", "/dev/f", "rwm")]),
        ("/dev/fuse:/dev/f:r", [("/dev/fuse", "/dev/f", "r")]),
        ("/dev/fuse:rw", [("/dev/fuse", "/dev/fuse", "rw")]),  # CRI-O's host_path:permissions
        (" /dev/fuse , /dev/null:/dev/n:mw ,", [("/dev/fuse", "/dev/fuse", "rwm"), ("/dev/null", "/dev/n", "mw")]),
    ],
)
def test_parse(value, expected):
    assert entries(value) == expected


@pytest.mark.parametrize(
    "value,words",
    [
        ("dev/fuse", "'dev/fuse': device paths must be absolute"),
        ("/dev/fuse:dev/f", "'/dev/fuse:dev/f': device paths must be absolute"),
        ("/dev/fuse::rw", "device paths must be absolute"),
        ("/dev/fuse:/dev/f:rwx", "permissions 'rwx': expected letters of 'rwm'"),
        ("/dev/fuse:/dev/f:rr", "permissions 'rr'"),
        ("/dev/fuse:/dev/f:", "permissions ''"),
        ("/dev/fuse:rwx", "permissions 'rwx'"),
        ("/dev/fuse:/dev/f:rw:x", "'/dev/fuse:/dev/f:rw:x': expected host_path[:container_path[:permissions]]"),
        ("/dev/null,/dev/fuse:/a:/b:c", "'/dev/fuse:/a:/b:c'"),
    ],
)
def test_malformed_entries_are_refused_naming_them(value, words):
    with pytest.raises(InvalidArgument, match="io.pycrio.devices entry") as info:
        parse_devices_annotation(value)
    assert words in str(info.value)


def test_only_allowed_devices_pass_compared_with_symlinks_resolved(tmp_path):
    link = tmp_path / "null-link"
    os.symlink("/dev/null", link)
    ann = {ANNOTATION_DEVICES: f"{link}:/dev/n:r"}
    assert [d.host_path for d in annotation_devices(ann, {}, ["/dev/null"])] == [str(link)]
    assert [d.host_path for d in annotation_devices({ANNOTATION_DEVICES: "/dev/null"}, {}, [str(link)])]
    with pytest.raises(PermissionDenied, match=r"device /dev/zero is not allowed.*allowed now: /dev/null"):
        annotation_devices({ANNOTATION_DEVICES: "/dev/null,/dev/zero"}, {}, ["/dev/null"])
    with pytest.raises(PermissionDenied, match="allowed_devices in \\[pycrio.runtime\\] is empty"):
        annotation_devices({ANNOTATION_DEVICES: "/dev/null"}, {}, [])


def test_a_missing_allowed_device_is_a_failed_precondition():
    ann = {ANNOTATION_DEVICES: "/dev/pycrio-missing"}
    with pytest.raises(FailedPrecondition, match="/dev/pycrio-missing is allowed but does not exist"):
        annotation_devices(ann, {}, ["/dev/pycrio-missing"])
    assert annotation_devices(ann, {}, ["/dev/pycrio-missing"], check_host=False)


def test_the_containers_annotation_wins_over_the_pods():
    pod = {ANNOTATION_DEVICES: "/dev/zero"}
    allowed = ["/dev/null", "/dev/zero"]
    assert [d.host_path for d in annotation_devices({}, pod, allowed)] == ["/dev/zero"]
    assert [d.host_path for d in annotation_devices({ANNOTATION_DEVICES: "/dev/null"}, pod, allowed)] == ["/dev/null"]
    assert annotation_devices({ANNOTATION_DEVICES: ""}, pod, allowed) == []  # set, empty: none
    assert annotation_devices({"other": "x"}, {}, []) == []  # no annotation: allowed_devices unneeded


def test_annotated_devices_enter_the_spec_like_cri_devices(rootfs):  # noqa: F811
    config = container_config(annotations={ANNOTATION_DEVICES: "/dev/full:/dev/f:r,/dev/null:/dev/mynull:rw"})
    config.devices.append(api_pb2.Device(host_path="/dev/zero", container_path="/dev/mynull", permissions="rwm"))
    runtime = runtime_facts(allowed_devices=("/dev/full", "/dev/null"))
    out = build(rootfs, config, runtime=runtime)
    devices = {d["path"]: (d["major"], d["minor"]) for d in out["linux"]["devices"]}
    # ContainerConfig.devices keeps /dev/mynull: the annotation's entry at that path is dropped, rule and all.
    assert devices == {"/dev/mynull": (1, 5), "/dev/f": (1, 7)}
    rules = out["linux"]["resources"]["devices"][len(DEFAULT_DEVICE_RULES) :]
    assert rules == [
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "r"},
    ]


def test_the_pods_annotation_reaches_its_containers_and_is_refused_when_not_allowed(rootfs):  # noqa: F811
    sandbox = sandbox_facts(annotations={ANNOTATION_DEVICES: "/dev/full:/dev/f:rw"})
    out = build(rootfs, sandbox=sandbox, runtime=runtime_facts(allowed_devices=("/dev/full",)))
    assert [d["path"] for d in out["linux"]["devices"]] == ["/dev/f"]
    with pytest.raises(PermissionDenied, match="/dev/full is not allowed"):
        build(rootfs, sandbox=sandbox)  # default allowed_devices: none


def test_privileged_containers_get_annotated_devices_too(rootfs):  # noqa: F811
    config = container_config(annotations={ANNOTATION_DEVICES: "/dev/full:/dev/f"})
    config.linux.security_context.privileged = True
    out = build(
        rootfs, config, sandbox=sandbox_facts(privileged=True), runtime=runtime_facts(allowed_devices=("/dev/full",))
    )
    assert {d["path"]: d["minor"] for d in out["linux"]["devices"]}["/dev/f"] == 7
    assert out["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
