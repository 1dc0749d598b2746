/* mount.h: overlay, bind and tmpfs mounts, and unmounting, for container root filesystems.
 *
 * Each mount is made with the new mount API (fsopen/fsconfig/fsmount/move_mount, open_tree,
 * mount_setattr) and falls back to mount(2) when the kernel lacks it (ENOSYS) or when
 * PYCRIO_MOUNT_NO_NEW_API asks for the fallback (tests).  The new API builds a detached mount
 * and attaches it in one step, so a half-configured mount (a read-only bind still writable)
 * is never visible; its fs context log ("overlay: failed to resolve ...") goes into messages.
 *
 * Overlay layers go in one "lowerdir+" per layer (Linux 6.8), so paths need no escaping and
 * there is no page-size limit on the layer list.  Without "lowerdir+" (6.5-6.7) one
 * "lowerdir" string is used when it fits fsconfig's 255 bytes, else mount(2); before 6.5
 * overlay's fs context only repacks a mount(2) options string, so mount(2) is used directly.
 * mount(2) takes one page of options: longer ones fail with E2BIG, never truncated.
 *
 * Errors name the target (or the layer) and the failing syscall or fsconfig key.  Nothing is
 * left mounted on failure.  Thread-safe, no global state; changes the caller's mount
 * namespace only at target.  Fed to cffi's cdef as is (no #if).
 */

#define PYCRIO_MOUNT_RDONLY 1
#define PYCRIO_MOUNT_REC 2
#define PYCRIO_MOUNT_NO_NEW_API 4 /* force the mount(2) fallback, as if fsopen gave ENOSYS */
#define PYCRIO_MOUNT_PRIVATE 8    /* bind: the new mounts are private, not peers of the source */

#define PYCRIO_UNMOUNT_DETACH 1

/* Overlay at target.  lowers[0] is the TOPMOST layer (overlay's order), 1 <= nlowers <= 500.
 * upper and work are both set (a writable overlay) or both NULL (a read-only one).
 * flags: PYCRIO_MOUNT_RDONLY, PYCRIO_MOUNT_NO_NEW_API.  Returns 0 or -errno. */
int pycrio_mount_overlay(const char *target, const char *const *lowers, int nlowers,
                         const char *upper, const char *work, int flags, struct pycrio_err *err);

/* Bind source (a file or a directory) onto target; PYCRIO_MOUNT_REC binds the submounts too
 * (rbind), PYCRIO_MOUNT_RDONLY makes it read-only (recursively with REC), PYCRIO_MOUNT_PRIVATE
 * makes the copies private (recursively with REC) before they are attached, so nothing mounted
 * later under a shared source propagates into them.  The fallback does a bind, then a
 * read-only remount that keeps nosuid/nodev/noexec, then MS_PRIVATE; REC|RDONLY there is
 * EOPNOTSUPP (a recursive read-only bind needs mount_setattr, Linux 5.12).  0 or -errno. */
int pycrio_mount_bind(const char *source, const char *target, int flags, struct pycrio_err *err);

/* A tmpfs at target, always nosuid,nodev,noexec.  options: tmpfs's own options separated by
 * commas, e.g. "mode=1777,size=65536k", or NULL.  flags: PYCRIO_MOUNT_RDONLY,
 * PYCRIO_MOUNT_NO_NEW_API.  Returns 0 or -errno. */
int pycrio_mount_tmpfs(const char *target, const char *options, int flags, struct pycrio_err *err);

/* Unmount target (PYCRIO_UNMOUNT_DETACH: lazily, MNT_DETACH); symlinks are not followed.
 * Returns 1 when a mount was removed, 0 when target is missing or not a mount point (EINVAL,
 * ENOENT), or -errno. */
int pycrio_unmount(const char *target, int flags, struct pycrio_err *err);
