"""Staged volume mounts: recursive read-only binds and image volumes, made before `runtime create`.

runc 1.1 knows neither the "rro" mount option nor image volumes, so pycrio makes both
itself under the container's bundle dir, volumes/<n> with n the mount's index in the CRI
request, and gives the runtime the staged path as the mount's source with "rbind,ro":

- recursive read-only: an rbind of host_path made read-only with every submount
  (open_tree + mount_setattr(AT_RECURSIVE), Linux 5.12; the mount(2) fallback refuses
  with EOPNOTSUPP) and private, so that nothing mounted later under a shared host_path
  propagates into it writable; the runtime's rbind clones the tree and each clone
  keeps its submount's read-only flag.
- image volume (KEP-4639): a read-only overlay of the image's layers from the layer
  store (a read-only bind of the layer of a single-layer image); image_sub_path is
  resolved inside the image (symlinks clamped to it, as in a chroot).

unstage() finds the staged mounts on disk, so cleanup after a failure or a crash needs no
record; each is detached lazily with its submounts.
"""

from __future__ import annotations

import collections
import errno
import os
import re
import stat

from pycrio import native
from pycrio.errors import FailedPrecondition, InvalidArgument, NotFound
from pycrio.image.images import Images
from pycrio.spec_mounts import check_host_path, check_image_volume, check_recursive_read_only, is_image_volume

VOLUMES_DIR = "volumes"
MAX_SYMLINKS = 40  # as the kernel's path walk allows


def recursive_read_only_supported(release: str | None = None) -> bool:
    """Whether this kernel has mount_setattr (Linux 5.12), which a recursive read-only bind needs."""
    found = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return found is not None and (int(found[1]), int(found[2])) >= (5, 12)


def needs_staging(m) -> bool:
    return is_image_volume(m) or m.recursive_read_only


def resolve_images(mounts, images: Images) -> None:
    """Check each image volume (readonly, sub path) and that its image is pulled; set its image.image_ref
    to the image's id (ContainerStatus reports it). NotFound names an image that is not there."""
    for m in mounts:
        if not is_image_volume(m):
            continue
        check_image_volume(m)
        record = images.find(m.image.image)
        if record is None:
            raise NotFound(f"image volume at {m.container_path}: image {m.image.image!r} not found: pull it first")
        m.image.image_ref = record.id


def stage(mounts, bundle: str, images: Images) -> dict[int, str]:
    """Make the staged mounts of mounts under bundle; {index in mounts: the source to give the runtime}.

    On an error some may be mounted already: unstage(bundle) removes them.
    """
    wanted = [(i, m) for i, m in enumerate(mounts) if needs_staging(m)]
    for _, m in wanted:  # every refusal before the first mount
        if is_image_volume(m):
            check_image_volume(m)
        else:
            check_host_path(m)
            check_recursive_read_only(m)
    if not wanted:
        return {}
    base = os.path.join(bundle, VOLUMES_DIR)
    os.makedirs(base, mode=0o700, exist_ok=True)
    sources: dict[int, str] = {}
    for i, m in wanted:
        target = os.path.join(base, str(i))
        if is_image_volume(m):
            sources[i] = _stage_image(m, target, images)
        else:
            sources[i] = _stage_recursive_read_only(m, target)
    return sources


def _stage_recursive_read_only(m, target: str) -> str:
    if os.path.isdir(m.host_path):
        os.mkdir(target, 0o700)
    else:
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    try:
        native.mount_bind(m.host_path, target, native.MOUNT_REC | native.MOUNT_RDONLY | native.MOUNT_PRIVATE)
    except native.NativeError as e:
        if e.errno == errno.EOPNOTSUPP:
            raise FailedPrecondition(
                f"mount at {m.container_path}: recursive_read_only needs mount_setattr (Linux 5.12), "
                "which this kernel lacks"
            ) from e
        raise
    return target


def _stage_image(m, target: str, images: Images) -> str:
    record = images.store.get(m.image.image_ref) if m.image.image_ref else images.find(m.image.image)
    if record is None:
        raise NotFound(f"image volume at {m.container_path}: image {m.image.image!r} not found: pull it first")
    os.mkdir(target, 0o700)
    lowers = [images.layers.diff(chain) for chain in reversed(record.layers)]
    if not lowers:
        raise InvalidArgument(f"image volume at {m.container_path}: image {record.id} has no layers")
    if len(lowers) == 1:
        native.mount_bind(lowers[0], target, native.MOUNT_RDONLY | native.MOUNT_PRIVATE)
    else:
        native.mount_overlay(target, lowers, flags=native.MOUNT_RDONLY)
    if not m.image_sub_path:
        return target
    try:
        return os.path.join(target, resolve_in_root(target, m.image_sub_path))
    except (FileNotFoundError, NotADirectoryError) as e:
        raise InvalidArgument(
            f"mount at {m.container_path}: image_sub_path {m.image_sub_path!r} does not exist in image "
            f"{m.image.image} ({record.id}): {e.strerror}"
        ) from e


def resolve_in_root(root: str, path: str) -> str:
    """path resolved inside root as a chroot would (an absolute symlink starts over at root, ".." stops
    there); the result, relative to root, has no symlink left. FileNotFoundError / NotADirectoryError
    when a component is missing or not a directory; OSError ELOOP past MAX_SYMLINKS links."""
    parts = collections.deque(p for p in path.split("/") if p)
    done: list[str] = []
    links = 0
    while parts:
        name = parts.popleft()
        if name == ".":
            continue
        if name == "..":
            if done:
                done.pop()
            continue
        here = os.path.join(root, *done, name)
        st = os.lstat(here)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            link = os.readlink(here)
            if link.startswith("/"):
                done.clear()
            parts.extendleft(reversed([p for p in link.split("/") if p]))
            continue
        if parts and not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), "/" + "/".join([*done, name]))
        done.append(name)
    return os.path.join(*done) if done else ""


def unstage(bundle: str) -> int:
    """Unmount (lazily, with submounts) and remove every staged mount under bundle; how many were mounted."""
    base = os.path.join(bundle, VOLUMES_DIR)
    try:
        names = os.listdir(base)
    except FileNotFoundError:
        return 0
    count = 0
    for name in names:
        path = os.path.join(base, name)
        while native.unmount(path, native.UNMOUNT_DETACH):  # a stack, should anything be mounted twice
            count += 1
        if os.path.isdir(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    os.rmdir(base)
    return count
