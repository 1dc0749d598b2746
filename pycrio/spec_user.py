"""Users and groups of a container image: safe reads of the rootfs's etc/passwd and etc/group.

The rootfs comes from an image nobody vetted: etc/passwd may be a symlink to
the host's /etc/shadow, a FIFO, a device or gigabytes long. Paths are resolved
one component at a time under a directory fd of the rootfs, never letting the
kernel follow a link: a symlink is read and its target resolved again inside
the rootfs (an absolute target starts over at the rootfs, ".." stops at it),
as if the process were chrooted. Only regular files up to MAX_FILE_SIZE are read.
"""

from __future__ import annotations

import collections
import os
import stat
from dataclasses import dataclass

from pycrio.errors import InvalidArgument

MAX_FILE_SIZE = 8 * 1024 * 1024  # bytes read from etc/passwd or etc/group at most
MAX_SYMLINKS = 40  # as the kernel's path walk allows
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to setuid(2): not a usable id


class RootfsPathError(OSError):
    """A path inside the rootfs could not be resolved or read safely."""


def _open_in_root(root_fd: int, path: str) -> int:
    """An O_RDONLY fd of the regular file at path, resolved inside root_fd as a chroot would.

    Raises FileNotFoundError when it does not exist, RootfsPathError when it is
    not a regular file or the symlinks loop.
    """
    parts = collections.deque(p for p in path.split("/") if p)
    dirs = [os.dup(root_fd)]  # the directories walked so far; dirs[-1] is the current one
    links = 0
    try:
        while parts:
            name = parts.popleft()
            if name == ".":
                continue
            if name == "..":
                if len(dirs) > 1:
                    os.close(dirs.pop())
                continue
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirs[-1])
            try:
                st = os.fstat(fd)
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise RootfsPathError(f"{path}: too many levels of symbolic links")
                    target = os.readlink(name, dir_fd=dirs[-1])
                    if target.startswith("/"):
                        while len(dirs) > 1:
                            os.close(dirs.pop())
                    parts.extendleft(reversed([p for p in target.split("/") if p]))
                    continue
                if parts:
                    if not stat.S_ISDIR(st.st_mode):
                        raise NotADirectoryError(f"{path}: {name} is not a directory")
                    dirs.append(fd)
                    fd = -1
                    continue
                if not stat.S_ISREG(st.st_mode):
                    raise RootfsPathError(f"{path}: not a regular file")
                # Re-open the same name for reading; the inode check defeats a swap in between.
                rd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dirs[-1])
                rst = os.fstat(rd)
                if (rst.st_dev, rst.st_ino) != (st.st_dev, st.st_ino):
                    os.close(rd)
                    raise RootfsPathError(f"{path}: changed while being opened")
                return rd
            finally:
                if fd >= 0:
                    os.close(fd)
        raise RootfsPathError(f"{path}: not a regular file")
    finally:
        for d in dirs:
            os.close(d)


def read_rootfs_file(rootfs: str, path: str, limit: int = MAX_FILE_SIZE) -> bytes | None:
    """The bytes of path inside rootfs, or None when it does not exist.

    InvalidArgument when it exists but is not a regular file inside the
    rootfs, or is larger than limit.
    """
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            fd = _open_in_root(root_fd, path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except RootfsPathError as e:
            raise InvalidArgument(f"image file {e}") from e
        except OSError as e:
            raise InvalidArgument(f"image file {path}: cannot open: {e.strerror}") from e
    finally:
        os.close(root_fd)
    try:
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise InvalidArgument(f"image file {path}: larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _parse_id(text: str) -> int | None:
    """A decimal id in [0, MAX_ID], or None."""
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    value = int(text)
    return value if value <= MAX_ID else None


def _lines(data: bytes | None) -> list[list[str]]:
    """The colon-separated fields of each meaningful line (comments and NIS +/- lines skipped)."""
    if not data:
        return []
    out = []
    for line in data.decode("utf-8", errors="surrogateescape").splitlines():
        if not line or line[0] in "#+-":
            continue
        out.append(line.split(":"))
    return out


def parse_passwd(data: bytes | None) -> list[PasswdEntry]:
    """passwd(5) entries; malformed lines are skipped, as getpwnam(3) does."""
    entries = []
    for fields in _lines(data):
        if len(fields) < 4 or not fields[0]:
            continue
        uid, gid = _parse_id(fields[2]), _parse_id(fields[3])
        if uid is not None and gid is not None:
            entries.append(PasswdEntry(fields[0], uid, gid))
    return entries


def parse_group(data: bytes | None) -> list[GroupEntry]:
    """group(5) entries; malformed lines are skipped."""
    entries = []
    for fields in _lines(data):
        if len(fields) < 3 or not fields[0]:
            continue
        gid = _parse_id(fields[2])
        if gid is None:
            continue
        members = tuple(m for m in fields[3].split(",") if m) if len(fields) > 3 else ()
        entries.append(GroupEntry(fields[0], gid, members))
    return entries


class ImageUsers:
    """The image's etc/passwd and etc/group, each read at most once, on first need."""

    def __init__(self, rootfs: str):
        self.rootfs = rootfs
        self._passwd: list[PasswdEntry] | None = None
        self._group: list[GroupEntry] | None = None

    @property
    def passwd(self) -> list[PasswdEntry]:
        if self._passwd is None:
            self._passwd = parse_passwd(read_rootfs_file(self.rootfs, "/etc/passwd"))
        return self._passwd

    @property
    def group(self) -> list[GroupEntry]:
        if self._group is None:
            self._group = parse_group(read_rootfs_file(self.rootfs, "/etc/group"))
        return self._group

    def by_name(self, name: str) -> PasswdEntry | None:
        return next((e for e in self.passwd if e.name == name), None)

    def by_uid(self, uid: int) -> PasswdEntry | None:
        return next((e for e in self.passwd if e.uid == uid), None)

    def group_by_name(self, name: str) -> GroupEntry | None:
        return next((e for e in self.group if e.name == name), None)

    def memberships(self, user: str | None) -> list[int]:
        """The gids of the etc/group entries listing user as a member, in file order."""
        if user is None:
            return []
        return _unique(e.gid for e in self.group if user in e.members)


def _unique(values) -> list[int]:
    return list(dict.fromkeys(values))


def check_id(value: int, what: str) -> int:
    """value when it is a usable uid/gid; InvalidArgument otherwise."""
    if not 0 <= value <= MAX_ID:
        raise InvalidArgument(f"{what} {value} is out of range (0 to {MAX_ID})")
    return value


def lookup_user(users: ImageUsers, user: str, what: str) -> tuple[int, int, str | None]:
    """(uid, primary gid, name for group memberships) of a user name or decimal uid.

    A uid missing from etc/passwd is fine (gid 0, no memberships); a name
    missing from it is an error naming the user.
    """
    uid = _parse_id(user)
    if uid is not None:
        entry = users.by_uid(uid)
        return (uid, entry.gid, entry.name) if entry else (uid, 0, None)
    if user.isascii() and user.lstrip("-").isdigit():
        raise InvalidArgument(f"{what} {user!r}: uid out of range (0 to {MAX_ID})")
    entry = users.by_name(user)
    if entry is None:
        raise InvalidArgument(f"{what} {user!r}: no such user in the image's /etc/passwd")
    return entry.uid, entry.gid, entry.name


def lookup_group(users: ImageUsers, group: str, what: str) -> int:
    """The gid of a group name or decimal gid; a name missing from etc/group is an error."""
    gid = _parse_id(group)
    if gid is not None:
        return gid
    if group.isascii() and group.lstrip("-").isdigit():
        raise InvalidArgument(f"{what} {group!r}: gid out of range (0 to {MAX_ID})")
    entry = users.group_by_name(group)
    if entry is None:
        raise InvalidArgument(f"{what} {group!r}: no such group in the image's /etc/group")
    return entry.gid


def resolve_image_user(users: ImageUsers, user_spec: str, what: str = "image user") -> tuple[int, int, list[int]]:
    """resolve_user on an ImageUsers (so a caller resolving several things reads the files once)."""
    user, sep, group = (user_spec or "0").partition(":")
    if not user:
        raise InvalidArgument(f"{what} {user_spec!r}: no user before the ':'")
    uid, gid, name = lookup_user(users, user, what)
    if sep:
        if not group:
            raise InvalidArgument(f"{what} {user_spec!r}: no group after the ':'")
        # With a group named, the user has that group only (OCI image spec, Docker's USER).
        return uid, lookup_group(users, group, what), []
    return uid, gid, users.memberships(name)


def resolve_user(rootfs: str, user_spec: str) -> tuple[int, int, list[int]]:
    """(uid, gid, additional gids) for an OCI image config's User, looked up in rootfs.

    user_spec is "", "user", "uid", "user:group", "uid:gid", "user:gid" or
    "uid:group". Names are looked up in the rootfs's etc/passwd and etc/group;
    a decimal value is an id whether or not the files list it. Without a
    group, the gid is the user's primary group in etc/passwd (0 when the uid
    is not listed) and the additional gids are the etc/group entries listing
    the user as a member; with a group, there are no additional gids. "" is root.
    """
    return resolve_image_user(ImageUsers(rootfs), user_spec)
