"""SupplementalGroupsPolicy against a real daemon and runc: the groups a container's processes get
(`id -G`, /proc/self/status) and ContainerStatus.user, also after a daemon restart."""

from __future__ import annotations

import signal
import time

import pytest

from pycrio.cri import api_pb2
from tests.e2e.test_images import pull
from tests.e2e.test_pods import node  # noqa: F401  (the fixture)
from tests.support.images import LayerBuilder, build_image, busybox_layer
from tests.support.push import push_image

# As critest's test-image-predefined-group: default-user (1000) is a member of group-defined-in-image (50000)
# in the image's /etc/group; the image's User is 1000.
UID = 1000
IMAGE_GID = 50000
EXTRA_GID = 1234
PASSWD = b"root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n"
GROUP = b"root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"


@pytest.fixture(scope="session")
def predefined_group_image(registry, busybox_image) -> str:
    top = LayerBuilder().file("etc/passwd", PASSWD).file("etc/group", GROUP)
    top.dir("home").dir("home/default-user", uid=UID, gid=UID)
    push_image(
        registry.host, "test/predefined-group", "1", build_image([busybox_layer(), top.build()], {"User": "1000"})
    )
    return f"{registry.host}/test/predefined-group:1"


def _run(node, image: str, name: str, sc: api_pb2.LinuxContainerSecurityContext) -> str:  # noqa: F811
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=image),
        command=["sh", "-c", "id -G; grep '^Groups:' /proc/self/status; exec sleep 600"],
        log_path=f"{name}.log",
        linux=api_pb2.LinuxContainerConfig(security_context=sc),
    )
    request = api_pb2.CreateContainerRequest(
        pod_sandbox_id=node.pod(), config=config, sandbox_config=node.last_pod_config
    )
    cid = node.rt.CreateContainer(request, timeout=30).container_id
    node.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=30)
    return cid


def _first_output(node, cid: str) -> list[str]:  # noqa: F811
    """The first process's two lines (`id -G`, the Groups line), from the CRI log."""
    path = node.status(cid).log_path
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(path) as f:
            lines = [line.split(" ", 3)[3] for line in f.read().splitlines()]
        if len(lines) >= 2:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"{path}: {lines}")


def _groups_line(groups: list[int]) -> str:
    return "Groups:\t" + "".join(f"{g} " for g in groups)


def _check(node, cid: str, uid: int, gid: int, groups: list[int]) -> None:  # noqa: F811
    """What the processes get equals what ContainerStatus.user says (critest's `id -G` string included)."""
    id_g = " ".join(map(str, groups))
    assert _first_output(node, cid) == [id_g, _groups_line(groups)]
    out = node.exec(cid, ["id", "-G"])
    assert (out.exit_code, out.stdout.decode()) == (0, id_g + "\n"), out
    out = node.exec(cid, ["sh", "-c", "id -u; id -g; grep '^Groups:' /proc/self/status"])
    assert out.stdout.decode().splitlines() == [str(uid), str(gid), _groups_line(groups)], out
    linux = node.status(cid).user.linux
    assert (linux.uid, linux.gid, list(linux.supplemental_groups)) == (uid, gid, groups)


def _restart(node, sig: int) -> None:  # noqa: F811
    if sig == signal.SIGTERM:
        assert node.d.stop() == 0, node.d.log()
    else:
        node.d.stop(sig)
    node.d.start()


def test_status_advertises_supplemental_groups_policy(node):  # noqa: F811
    assert node.rt.Status(api_pb2.StatusRequest()).features.supplemental_groups_policy is True


@pytest.mark.parametrize(
    "policy,groups,restart",
    [
        (api_pb2.Merge, [UID, EXTRA_GID, IMAGE_GID], signal.SIGTERM),
        (api_pb2.Strict, [UID, EXTRA_GID], signal.SIGKILL),
    ],
    ids=["merge", "strict"],
)
def test_policy_as_critest_runs_it(node, predefined_group_image, policy, groups, restart):  # noqa: F811
    pull(node.d, predefined_group_image)
    sc = api_pb2.LinuxContainerSecurityContext(
        run_as_user=api_pb2.Int64Value(value=UID), supplemental_groups=[EXTRA_GID], supplemental_groups_policy=policy
    )
    cid = _run(node, predefined_group_image, "groups", sc)
    _check(node, cid, UID, UID, groups)
    _restart(node, restart)
    assert node.status(cid).state == api_pb2.CONTAINER_RUNNING
    _check(node, cid, UID, UID, groups)


@pytest.mark.parametrize(
    "policy,groups", [(api_pb2.Merge, [3000, IMAGE_GID]), (api_pb2.Strict, [3000])], ids=["merge", "strict"]
)
def test_image_user_and_run_as_group(node, predefined_group_image, policy, groups):  # noqa: F811
    """The image's User (by name) with run_as_group: the gid is run_as_group; Merge adds the image's groups."""
    pull(node.d, predefined_group_image)
    sc = api_pb2.LinuxContainerSecurityContext(
        run_as_username="default-user", run_as_group=api_pb2.Int64Value(value=3000), supplemental_groups_policy=policy
    )
    cid = _run(node, predefined_group_image, "named", sc)
    _check(node, cid, UID, 3000, groups)


def test_image_default_user_merges_its_groups(node, predefined_group_image):  # noqa: F811
    pull(node.d, predefined_group_image)
    cid = _run(node, predefined_group_image, "default", api_pb2.LinuxContainerSecurityContext())
    _check(node, cid, UID, UID, [UID, IMAGE_GID])
