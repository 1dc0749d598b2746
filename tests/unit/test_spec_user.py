"""spec_user: resolve_user on real rootfs directories (hostile ones too), and process.user in container_spec."""

from __future__ import annotations

import os

import pytest

from pycrio import spec, spec_user
from pycrio.cri import api_pb2
from pycrio.errors import InvalidArgument
from pycrio.spec_user import parse_group, parse_passwd, read_rootfs_file, resolve_user
from tests.support.spec_facts import (
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


# ---------------------------------------------------------------- resolve_user

RESOLVE_CASES = [
    # (image User, (uid, gid, additional gids from etc/group))
    ("", (0, 0, [10])),
    ("root", (0, 0, [10])),
    ("0", (0, 0, [10])),
    ("app", (1000, 1000, [10, 29])),
    ("1000", (1000, 1000, [10, 29])),
    ("other", (1001, 1001, [29, 44])),
    ("daemon", (1, 1, [])),
    ("app:app", (1000, 1000, [])),
    ("app:44", (1000, 44, [])),
    ("1000:video", (1000, 44, [])),
    ("1000:1000", (1000, 1000, [])),
    ("5000", (5000, 0, [])),  # a uid the image does not list: gid 0, no groups
    ("5000:6000", (5000, 6000, [])),
    ("5000:audio", (5000, 29, [])),
    ("4294967294", (4294967294, 0, [])),
]


@pytest.mark.parametrize("user,expected", RESOLVE_CASES)
def test_resolve_user(rootfs, user, expected):
    assert resolve_user(rootfs, user) == expected


@pytest.mark.parametrize(
    "user,match",
    [
        ("nobody-here", "'nobody-here': no such user in the image's /etc/passwd"),
        ("app:nogroup", "'nogroup': no such group in the image's /etc/group"),
        (":app", "no user before the ':'"),
        ("app:", "no group after the ':'"),
        ("4294967295", "uid out of range"),
        ("-1", "uid out of range"),
        ("app:-5", "gid out of range"),
        ("99999999999999999999", "uid out of range"),
    ],
)
def test_resolve_user_refusals(rootfs, user, match):
    with pytest.raises(InvalidArgument, match=match):
        resolve_user(rootfs, user)


def test_resolve_user_without_etc_files(tmp_path):
    rootfs = make_rootfs(tmp_path / "r", passwd=None, group=None)
    assert resolve_user(rootfs, "") == (0, 0, [])
    assert resolve_user(rootfs, "123:456") == (123, 456, [])
    with pytest.raises(InvalidArgument, match="'app': no such user"):
        resolve_user(rootfs, "app")
    with pytest.raises(InvalidArgument, match="'staff': no such group"):
        resolve_user(rootfs, "0:staff")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_user(str(empty), "7") == (7, 0, [])


def test_parsers_skip_malformed_lines_comments_and_nis():
    passwd = b"# comment\n+nis::0:0::/:\n-x\nshort:x:1\nbad:x:one:1::/:\nbig:x:4294967295:0::/:\nok:x:5:6:g:/:/s\n\n"
    assert parse_passwd(passwd) == [spec_user.PasswdEntry("ok", 5, 6)]
    group = b"g1:x:7:a,,b\nnomembers:x:8\nbad:x:z:a\n#c:x:9:a\n"
    assert parse_group(group) == [spec_user.GroupEntry("g1", 7, ("a", "b")), spec_user.GroupEntry("nomembers", 8, ())]
    assert parse_passwd(None) == [] and parse_group(b"") == []


def test_non_utf8_names_match_byte_for_byte(tmp_path):
    rootfs = make_rootfs(tmp_path / "r", passwd=None, group=None)
    (tmp_path / "r" / "etc" / "passwd").write_bytes(b"caf\xe9:x:42:43::/:\n")
    name = b"caf\xe9".decode("utf-8", errors="surrogateescape")
    assert resolve_user(rootfs, name) == (42, 43, [])


# ---------------------------------------------------------------- hostile images


@pytest.fixture
def host_secret(tmp_path):
    """A passwd-like file outside the rootfs: resolving must never see its user."""
    outside = tmp_path / "host" / "etc"
    outside.mkdir(parents=True)
    (outside / "passwd").write_text("hostonly:x:0:0::/:/bin/sh\n")
    return outside / "passwd"


def hostile_rootfs(tmp_path, target: str, where: str = "etc/passwd"):
    rootfs = tmp_path / "rootfs"
    make_rootfs(rootfs, passwd=None, group=None)
    link = rootfs / where
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists() or link.is_symlink():
        link.unlink()
    os.symlink(target, link)
    return str(rootfs)


def test_absolute_symlink_to_host_shadow_stays_in_the_rootfs(tmp_path):
    rootfs = hostile_rootfs(tmp_path, "/etc/shadow")
    assert read_rootfs_file(rootfs, "/etc/passwd") is None  # rootfs/etc/shadow does not exist
    assert resolve_user(rootfs, "0") == (0, 0, [])
    with pytest.raises(InvalidArgument, match="no such user"):
        resolve_user(rootfs, "root")


def test_absolute_symlink_to_a_host_file_reads_the_rootfs_one(tmp_path, host_secret):
    rootfs = hostile_rootfs(tmp_path, str(host_secret))
    with pytest.raises(InvalidArgument, match="'hostonly': no such user"):
        resolve_user(rootfs, "hostonly")
    # The same path inside the rootfs is what a chrooted reader sees.
    inside = tmp_path / "rootfs" / str(host_secret).lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("inside:x:9:9::/:\n")
    assert resolve_user(rootfs, "inside") == (9, 9, [])


@pytest.mark.parametrize("dots", [2, 3, 8, 30])
def test_relative_symlink_climbing_out_is_clamped_at_the_root(tmp_path, host_secret, dots):
    rel_host = os.path.relpath(host_secret, "/")
    rootfs = hostile_rootfs(tmp_path, "../" * dots + rel_host)
    with pytest.raises(InvalidArgument, match="no such user"):
        resolve_user(rootfs, "hostonly")


def test_symlink_to_own_etc_passwd_by_dotdot_loops_not_escapes(tmp_path):
    rootfs = hostile_rootfs(tmp_path, "../../etc/passwd")
    with pytest.raises(InvalidArgument, match="too many levels of symbolic links"):
        resolve_user(rootfs, "root")


def test_symlinked_etc_directory_is_resolved_inside(tmp_path, host_secret):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    os.symlink(str(host_secret.parent), rootfs / "etc")  # etc -> /<tmp>/host/etc on the host
    with pytest.raises(InvalidArgument, match="no such user"):
        resolve_user(str(rootfs), "hostonly")
    # A legitimate image: etc -> usr/etc, passwd -> ../lib/passwd.
    legit = tmp_path / "legit"
    (legit / "usr" / "etc").mkdir(parents=True)
    (legit / "usr" / "lib").mkdir()
    (legit / "usr" / "lib" / "passwd").write_text("svc:x:70:71::/:\n")
    os.symlink("usr/etc", legit / "etc")
    os.symlink("../lib/passwd", legit / "usr" / "etc" / "passwd")
    assert resolve_user(str(legit), "svc") == (70, 71, [])


def test_symlink_loop_is_refused(tmp_path):
    rootfs = hostile_rootfs(tmp_path, "/etc/loop")
    os.symlink("/etc/passwd", tmp_path / "rootfs" / "etc" / "loop")
    with pytest.raises(InvalidArgument, match="symbolic links"):
        resolve_user(rootfs, "root")


def test_fifo_device_and_directory_are_refused_without_blocking(tmp_path):
    rootfs = make_rootfs(tmp_path / "r", passwd=None, group=None)
    os.mkfifo(os.path.join(rootfs, "etc", "passwd"))
    with pytest.raises(InvalidArgument, match="not a regular file"):
        resolve_user(rootfs, "root")
    os.unlink(os.path.join(rootfs, "etc", "passwd"))
    os.mknod(os.path.join(rootfs, "etc", "passwd"), 0o666 | 0o020000, os.makedev(1, 5))  # a /dev/zero
    with pytest.raises(InvalidArgument, match="not a regular file"):
        resolve_user(rootfs, "root")
    os.unlink(os.path.join(rootfs, "etc", "passwd"))
    os.mkdir(os.path.join(rootfs, "etc", "passwd"))
    with pytest.raises(InvalidArgument, match="not a regular file"):
        resolve_user(rootfs, "root")


def test_oversized_file_is_refused(tmp_path):
    rootfs = make_rootfs(tmp_path / "r", passwd=None)
    with open(os.path.join(rootfs, "etc", "passwd"), "wb") as f:
        f.truncate(spec_user.MAX_FILE_SIZE + 1)
    with pytest.raises(InvalidArgument, match="larger than"):
        resolve_user(rootfs, "root")
    assert read_rootfs_file(rootfs, "/etc/passwd", limit=spec_user.MAX_FILE_SIZE + 1) is not None


def test_etc_being_a_file_means_no_passwd(tmp_path):
    rootfs = tmp_path / "r"
    rootfs.mkdir()
    (rootfs / "etc").write_text("not a dir")
    assert read_rootfs_file(str(rootfs), "/etc/passwd") is None


# ---------------------------------------------------------------- process.user through container_spec


def user_of(rootfs, sc_setup=None, image_user="", **sandbox):
    config = container_config(command=["/bin/sh"])
    if sc_setup:
        sc_setup(config.linux.security_context)
    out = spec.container_spec(
        "c1", config, sandbox_facts(**sandbox), image_facts(rootfs, User=image_user), runtime_facts()
    )
    check_oci_shape(out)
    return out["process"]["user"]


def user(uid, gid, *additional):
    return {"uid": uid, "gid": gid, "additionalGids": list(additional)}


def test_image_user_with_primary_gid_first(rootfs):
    assert user_of(rootfs) == user(0, 0, 0, 10)
    assert user_of(rootfs, image_user="app") == user(1000, 1000, 1000, 10, 29)
    assert user_of(rootfs, image_user="app:video") == user(1000, 44, 44)


def test_run_as_user_overrides_the_image_user(rootfs):
    def sc(s):
        s.run_as_user.value = 1001

    assert user_of(rootfs, sc, image_user="app:video") == user(1001, 1001, 1001, 29, 44)


def test_run_as_user_zero_is_root_not_unset(rootfs):
    def sc(s):
        s.run_as_user.value = 0

    assert user_of(rootfs, sc, image_user="app") == user(0, 0, 0, 10)


def test_run_as_user_unknown_to_the_image(rootfs):
    def sc(s):
        s.run_as_user.value = 4242

    assert user_of(rootfs, sc) == user(4242, 0, 0)


def test_run_as_username(rootfs):
    def sc(s):
        s.run_as_username = "other"

    assert user_of(rootfs, sc) == user(1001, 1001, 1001, 29, 44)


def test_run_as_username_missing_names_the_user(rootfs):
    def sc(s):
        s.run_as_username = "ghost"

    with pytest.raises(InvalidArgument, match="run_as_username 'ghost': no such user"):
        user_of(rootfs, sc)


def test_run_as_group_overrides_the_primary_gid(rootfs):
    def sc(s):
        s.run_as_user.value = 1000
        s.run_as_group.value = 3000

    assert user_of(rootfs, sc) == user(1000, 3000, 3000, 10, 29)


@pytest.mark.parametrize("image_user", ["", "app"])
def test_run_as_group_without_user_is_refused(rootfs, image_user):
    def sc(s):
        s.run_as_group.value = 3000

    with pytest.raises(InvalidArgument, match="run_as_group is set without run_as_user"):
        user_of(rootfs, sc, image_user=image_user)


def test_run_as_user_and_username_together_are_refused(rootfs):
    def sc(s):
        s.run_as_user.value = 1
        s.run_as_username = "app"

    with pytest.raises(InvalidArgument, match="both set"):
        user_of(rootfs, sc)


@pytest.mark.parametrize("field,value", [("run_as_user", -1), ("run_as_group", -2), ("run_as_user", 2**32)])
def test_out_of_range_ids_are_refused(rootfs, field, value):
    def sc(s):
        s.run_as_user.value = 1
        getattr(s, field).value = value

    with pytest.raises(InvalidArgument, match=f"{field} {value} is out of range"):
        user_of(rootfs, sc)


def test_supplemental_groups_merge_and_strict(rootfs):
    def merge(s):
        s.run_as_user.value = 1000
        s.supplemental_groups.extend([5000, 29, 6000])

    assert user_of(rootfs, merge) == user(1000, 1000, 1000, 10, 29, 5000, 6000)

    def strict(s):
        merge(s)
        s.supplemental_groups_policy = api_pb2.Strict

    assert user_of(rootfs, strict) == user(1000, 1000, 1000, 5000, 29, 6000)

    def strict_image_user(s):
        s.supplemental_groups_policy = api_pb2.Strict

    assert user_of(rootfs, strict_image_user, image_user="app") == user(1000, 1000, 1000)


def test_negative_supplemental_group_is_refused(rootfs):
    def sc(s):
        s.supplemental_groups.append(-3)

    with pytest.raises(InvalidArgument, match="supplemental_groups entry -3"):
        user_of(rootfs, sc)


def test_image_user_that_is_not_a_string_is_refused(rootfs):
    config = container_config(command=["/bin/sh"])
    with pytest.raises(InvalidArgument, match="User"):
        spec.container_spec("c1", config, sandbox_facts(), image_facts(rootfs, User=1000), runtime_facts())


# ---------------------------------------------------------------- SupplementalGroupsPolicy, ContainerStatus.user

# critest's test-image-predefined-group: default-user (1000) belongs to group-defined-in-image (50000).
PREDEFINED_PASSWD = "root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n"
PREDEFINED_GROUP = "root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"


@pytest.fixture
def predefined(tmp_path):
    return make_rootfs(tmp_path / "predefined", PREDEFINED_PASSWD, PREDEFINED_GROUP)


def _policy(policy, **fields):
    def sc(s):
        if "uid" in fields:
            s.run_as_user.value = fields["uid"]
        if "username" in fields:
            s.run_as_username = fields["username"]
        if "gid" in fields:
            s.run_as_group.value = fields["gid"]
        s.supplemental_groups.extend(fields.get("extra", []))
        s.supplemental_groups_policy = policy

    return sc


@pytest.mark.parametrize(
    "policy,groups",
    [(api_pb2.Merge, [1000, 1234, 50000]), (api_pb2.Strict, [1000, 1234])],
    ids=["merge", "strict"],
)
def test_critest_predefined_group_image(predefined, policy, groups):
    """What critest's SupplementalGroupsPolicy specs assert: uid 1000, gid 1000, and the sorted groups."""
    for image_user, sc in (("1000", _policy(policy, extra=[1234])), ("", _policy(policy, uid=1000, extra=[1234]))):
        process_user = user_of(predefined, sc, image_user=image_user)
        assert spec.effective_user(process_user) == {"uid": 1000, "gid": 1000, "supplemental_groups": groups}


@pytest.mark.parametrize(
    "fields,merge,strict",
    [
        # run_as_user: the primary group from etc/passwd, memberships from etc/group by the uid's name
        ({"uid": 1000}, user(1000, 1000, 1000, 10, 29), user(1000, 1000, 1000)),
        # run_as_username resolves the same way
        ({"username": "other"}, user(1001, 1001, 1001, 29, 44), user(1001, 1001, 1001)),
        # run_as_group replaces the primary gid; Merge still adds the user's memberships
        ({"uid": 1000, "gid": 3000}, user(1000, 3000, 3000, 10, 29), user(1000, 3000, 3000)),
        # a uid the image does not know has no memberships under either policy
        ({"uid": 4242, "extra": [7]}, user(4242, 0, 0, 7), user(4242, 0, 0, 7)),
        # requested groups come after the image's; one repeated is listed once
        (
            {"uid": 1000, "extra": [29, 5000, 1000]},
            user(1000, 1000, 1000, 10, 29, 5000),
            user(1000, 1000, 1000, 29, 5000),
        ),
        # root: wheel (10) lists root
        ({"uid": 0}, user(0, 0, 0, 10), user(0, 0, 0)),
    ],
)
def test_merge_adds_image_groups_and_strict_does_not(rootfs, fields, merge, strict):
    assert user_of(rootfs, _policy(api_pb2.Merge, **fields)) == merge
    assert user_of(rootfs, _policy(api_pb2.Strict, **fields)) == strict


@pytest.mark.parametrize("policy", [api_pb2.Merge, api_pb2.Strict])
def test_image_user_group_spec_gets_that_group_only_under_either_policy(rootfs, policy):
    assert user_of(rootfs, _policy(policy, extra=[5000]), image_user="app:video") == user(1000, 44, 44, 5000)
    assert user_of(rootfs, _policy(policy), image_user="other") == (
        user(1001, 1001, 1001, 29, 44) if policy == api_pb2.Merge else user(1001, 1001, 1001)
    )


@pytest.mark.parametrize("policy", [api_pb2.Merge, api_pb2.Strict])
def test_run_as_group_without_user_is_refused_under_either_policy(rootfs, policy):
    with pytest.raises(InvalidArgument, match="run_as_group is set without run_as_user"):
        user_of(rootfs, _policy(policy, gid=5))


def test_unknown_policy_is_refused(rootfs):
    with pytest.raises(InvalidArgument, match="supplemental_groups_policy 7: expected Merge or Strict"):
        user_of(rootfs, _policy(7, uid=1000))


def test_more_groups_than_the_kernel_takes_are_refused(rootfs):
    def sc(s):
        s.run_as_user.value = 1000
        s.supplemental_groups.extend(range(100_000, 100_000 + spec.NGROUPS_MAX))

    with pytest.raises(InvalidArgument, match="at most 65536"):
        user_of(rootfs, sc)


def test_effective_user_is_sorted_and_unique():
    assert spec.effective_user(user(5, 7, 7, 50000, 1234, 7)) == {
        "uid": 5,
        "gid": 7,
        "supplemental_groups": [7, 1234, 50000],
    }
    assert spec.effective_user({"uid": 0, "gid": 0}) == {"uid": 0, "gid": 0, "supplemental_groups": []}


def test_container_status_reports_the_recorded_user():
    from pycrio.runtime_store import ContainerRecord
    from pycrio.server.convert import container_status

    record = ContainerRecord(
        id="c" * 64,
        pod_id="p" * 64,
        name="p/c_0",
        state="running",
        config=container_config(),
        image_id="sha256:" + "0" * 64,
        image_ref="busybox",
        created_ns=1,
        facts={"user": {"uid": 1000, "gid": 1000, "supplemental_groups": [1000, 1234, 50000]}},
    )
    linux = container_status(record).user.linux
    assert (linux.uid, linux.gid, list(linux.supplemental_groups)) == (1000, 1000, [1000, 1234, 50000])
    record.facts = {}  # a record from before the fact was kept: no user reported
    assert not container_status(record).HasField("user")
