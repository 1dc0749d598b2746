"""pycrio/sandbox.py pause_user: the uid, gid and groups the pause takes from the pod's security context."""

from __future__ import annotations

import pytest

from pycrio.cri import api_pb2
from pycrio.errors import InvalidArgument
from pycrio.sandbox import pause_user


def sc(uid=None, gid=None, groups=()) -> api_pb2.LinuxSandboxSecurityContext:
    context = api_pb2.LinuxSandboxSecurityContext(supplemental_groups=list(groups))
    if uid is not None:
        context.run_as_user.value = uid
    if gid is not None:
        context.run_as_group.value = gid
    return context


@pytest.mark.parametrize(
    "context,expected",
    [
        (sc(), (65535, 65535, [])),
        (sc(uid=1234, gid=5678, groups=[42]), (1234, 5678, [42])),
        (sc(uid=1234), (1234, 0, [])),  # no etc/passwd in the pause image: gid 0, as containerd
        (sc(gid=5678), (65535, 5678, [])),  # runAsGroup alone is legal in a pod
        (sc(groups=[7, 3, 7]), (65535, 65535, [7, 3])),
        (sc(uid=0, gid=0), (0, 0, [])),
        (sc(uid=2**32 - 2, gid=2**32 - 2, groups=[2**32 - 2]), (2**32 - 2, 2**32 - 2, [2**32 - 2])),
    ],
    ids=["default", "all", "user-alone", "group-alone", "groups-alone", "root", "largest"],
)
def test_pause_user(context, expected):
    assert pause_user(context) == expected


@pytest.mark.parametrize(
    "context,named",
    [
        (sc(uid=-1), "run_as_user -1"),
        (sc(uid=2**32 - 1), "run_as_user 4294967295"),
        (sc(gid=-2), "run_as_group -2"),
        (sc(uid=1, gid=2**40), "run_as_group 1099511627776"),
        (sc(groups=[1, -1]), "supplemental_groups entry -1"),
        (sc(groups=[2**32 - 1]), "supplemental_groups entry 4294967295"),
        (sc(groups=range(65537)), "65537 supplemental_groups"),
    ],
    ids=["uid-negative", "uid-minus-one", "gid-negative", "gid-huge", "group-negative", "group-minus-one", "too-many"],
)
def test_out_of_range_is_invalid_argument(context, named):
    with pytest.raises(InvalidArgument, match=named):
        pause_user(context)
