/* mount.c: overlay, bind and tmpfs mounts with the new mount API and a mount(2) fallback;
 * see include/mount.h for the choice between them. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "internal/cleanup.h"
#include "internal/err_set.h"
#include "include/mount.h"

#define KNOWN_FLAGS                                                                                \
    (PYCRIO_MOUNT_RDONLY | PYCRIO_MOUNT_REC | PYCRIO_MOUNT_NO_NEW_API | PYCRIO_MOUNT_PRIVATE)
#define OVL_MAX_STACK 500      /* overlayfs's limit on lower layers */
#define FSCONFIG_VALUE_MAX 255 /* fsconfig copies at most 256 bytes of a string, NUL included */
#define FS_LOG_MAX 384         /* room for the fs context's messages in an error */
#define FS_LOG_UNKNOWN "Unknown parameter"

struct ovl {
    const char *target;
    const char *const *lowers;
    int nlowers;
    const char *upper; /* NULL with work NULL: a read-only overlay */
    const char *work;
    int flags;
};

/* ---- errors ----------------------------------------------------------------------------- */

/* Drain the fs context's log ("e overlay: failed to resolve ...") into buf, "; "-separated. */
static void fs_log_read(int fsfd, char *buf, size_t size)
{
    char line[256];
    size_t len = 0;

    buf[0] = '\0';
    for (int i = 0; i < 16 && fsfd >= 0; i++) {
        ssize_t n = read(fsfd, line, sizeof(line) - 1);
        const char *text = line;

        if (n <= 0)
            break;
        line[n] = '\0';
        while (n > 0 && line[n - 1] == '\n')
            line[--n] = '\0';
        if (n > 2 && line[1] == ' ') /* "e ", "w ", "i ": the message's level */
            text += 2;
        if (len + 1 < size) {
            int w = snprintf(buf + len, size - len, "%s%s", len > 0 ? "; " : "", text);

            len = w < 0 ? len : (size_t)w >= size - len ? size - 1 : len + (size_t)w;
        }
    }
}

/* Fill err with "<what>: <strerror>" plus the kernel's log when there is one. */
static int fail_log(struct pycrio_err *err, int errnum, const char *step, const char *path,
                    const char *log, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* fail_log with the log drained from the fs context fsfd. */
static int fs_fail(struct pycrio_err *err, int fsfd, int errnum, const char *step, const char *path,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int vfail_log(struct pycrio_err *err, int errnum, const char *step, const char *path,
                     const char *log, const char *fmt, va_list ap)
{
    char what[PYCRIO_ERR_MSG_MAX];

    vsnprintf(what, sizeof(what), fmt, ap);
    if (log != NULL && log[0] != '\0')
        return pycrio_err_set(err, errnum, step, path, "%s: %s (kernel: %s)", what,
                              strerror(errnum), log);
    return pycrio_err_set(err, errnum, step, path, "%s: %s", what, strerror(errnum));
}

static int fail_log(struct pycrio_err *err, int errnum, const char *step, const char *path,
                    const char *log, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = vfail_log(err, errnum, step, path, log, fmt, ap);
    va_end(ap);
    return rc;
}

static int fs_fail(struct pycrio_err *err, int fsfd, int errnum, const char *step, const char *path,
                   const char *fmt, ...)
{
    char log[FS_LOG_MAX];
    va_list ap;
    int rc;

    fs_log_read(fsfd, log, sizeof(log));
    va_start(ap, fmt);
    rc = vfail_log(err, errnum, step, path, log, fmt, ap);
    va_end(ap);
    return rc;
}

/* The "source" shown in mountinfo: what mount(2) would have shown. */
static int set_source(int fsfd, const char *source, const char *target, struct pycrio_err *err)
{
    if (fsconfig(fsfd, FSCONFIG_SET_STRING, "source", source, 0) == 0)
        return 0;
    return fs_fail(err, fsfd, errno, "fsconfig source", target, "%s on %s: fsconfig source", source,
                   target);
}

/* ---- overlay option strings ------------------------------------------------------------- */

static int needs_escape(char c)
{
    return c == '\\' || c == ':' || c == ',';
}

/* Length of s once '\', ':' and ',' are backslash-escaped, as overlay's parser wants. */
static size_t escaped_len(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        n += needs_escape(*s) ? 2 : 1;
    return n;
}

/* Write the escaped s at d (room for escaped_len(s) + 1); returns the end, NUL-terminated. */
static char *escape_into(char *d, const char *s)
{
    for (; *s; s++) {
        if (needs_escape(*s))
            *d++ = '\\';
        *d++ = *s;
    }
    *d = '\0';
    return d;
}

static int kernel_older_than(int major, int minor)
{
    struct utsname u;
    int ma = 0, mi = 0;

    if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
        return 0;
    return ma < major || (ma == major && mi < minor);
}

/* The first of target, the layers, upper and work that cannot be stat()ed, for an ENOENT. */
static const char *ovl_missing_path(const struct ovl *o, const char **role)
{
    struct stat st;

    *role = "target";
    if (stat(o->target, &st) < 0)
        return o->target;
    *role = "lower layer";
    for (int i = 0; i < o->nlowers; i++)
        if (stat(o->lowers[i], &st) < 0)
            return o->lowers[i];
    *role = "upperdir";
    if (o->upper != NULL && stat(o->upper, &st) < 0)
        return o->upper;
    *role = "workdir";
    if (o->work != NULL && stat(o->work, &st) < 0)
        return o->work;
    return NULL;
}

/* ---- overlay with mount(2) -------------------------------------------------------------- */

static int overlay_legacy(const struct ovl *o, struct pycrio_err *err)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t len = strlen("lowerdir=") + (size_t)(o->nlowers - 1);
    cleanup_free char *opts = NULL;
    const char *role, *missing;
    char *d;

    for (int i = 0; i < o->nlowers; i++)
        len += escaped_len(o->lowers[i]);
    if (o->upper != NULL)
        len += strlen(",upperdir=") + escaped_len(o->upper) + strlen(",workdir=") +
               escaped_len(o->work);
    if (page <= 0)
        page = 4096;
    if (len >= (size_t)page)
        return pycrio_err_set(err, E2BIG, "mount", o->target,
                              "overlay on %s: the mount(2) options for %d layers are %zu bytes, "
                              "more than the %ld bytes of a page (shorten the layer paths, or "
                              "use the new mount API with lowerdir+, Linux 6.8)",
                              o->target, o->nlowers, len, page - 1);
    opts = malloc(len + 1);
    if (opts == NULL)
        return pycrio_err_set(err, ENOMEM, "mount", o->target, "overlay on %s: out of memory",
                              o->target);
    memcpy(opts, "lowerdir=", strlen("lowerdir="));
    d = opts + strlen("lowerdir=");
    for (int i = 0; i < o->nlowers; i++) {
        if (i > 0)
            *d++ = ':';
        d = escape_into(d, o->lowers[i]);
    }
    if (o->upper != NULL) {
        memcpy(d, ",upperdir=", strlen(",upperdir=") + 1);
        d = escape_into(d + strlen(d), o->upper);
        memcpy(d, ",workdir=", strlen(",workdir=") + 1);
        escape_into(d + strlen(d), o->work);
    }
    if (mount("overlay", o->target, "overlay", (o->flags & PYCRIO_MOUNT_RDONLY) ? MS_RDONLY : 0,
              opts) == 0)
        return 0;
    if ((errno == ENOENT || errno == ENOTDIR) && (missing = ovl_missing_path(o, &role)) != NULL) {
        int saved = errno;

        return pycrio_err_set(err, saved, "mount", missing, "overlay on %s: %s %s: %s", o->target,
                              role, missing, strerror(saved));
    }
    return pycrio_err_set(err, errno, "mount", o->target, "overlay on %s: mount: %s", o->target,
                          strerror(errno));
}

/* ---- overlay with the new mount API ----------------------------------------------------- */

/* fsconfig key=path: a string when it fits (escaped unless lowerdir+), else a directory fd
 * (Linux 6.13).  Returns 0 or -errno, leaving the context's log for the caller. */
static int ovl_set_path(int fsfd, const char *key, const char *path, int escape)
{
    char value[FSCONFIG_VALUE_MAX + 1];
    cleanup_close int fd = -1;

    if ((escape ? escaped_len(path) : strlen(path)) <= FSCONFIG_VALUE_MAX) {
        if (escape)
            escape_into(value, path);
        if (fsconfig(fsfd, FSCONFIG_SET_STRING, key, escape ? value : path, 0) < 0)
            return -errno;
        return 0;
    }
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsconfig(fsfd, FSCONFIG_SET_FD, key, NULL, fd) < 0)
        return -errno;
    return 0;
}

static int ovl_set_path_or_fail(int fsfd, const struct ovl *o, const char *key, const char *path,
                                int escape, struct pycrio_err *err)
{
    int rc = ovl_set_path(fsfd, key, path, escape);
    char step[PYCRIO_ERR_STEP_MAX];

    if (rc == 0)
        return 0;
    snprintf(step, sizeof(step), "fsconfig %s", key);
    return fs_fail(
        err, fsfd, -rc, step, path, "overlay on %s: fsconfig %s %s%s", o->target, key, path,
        strlen(path) > FSCONFIG_VALUE_MAX ? " (a path over 255 bytes needs Linux 6.13)" : "");
}

/* The layers as one "lowerdir" string (no lowerdir+): mount(2) when it is too long. */
static int ovl_set_lowerdir_string(int fsfd, const struct ovl *o, struct pycrio_err *err)
{
    char value[FSCONFIG_VALUE_MAX + 1], *d = value;
    size_t len = (size_t)(o->nlowers - 1);

    for (int i = 0; i < o->nlowers; i++)
        len += escaped_len(o->lowers[i]);
    if (len > FSCONFIG_VALUE_MAX)
        return 1; /* the caller goes to mount(2) */
    for (int i = 0; i < o->nlowers; i++) {
        if (i > 0)
            *d++ = ':';
        d = escape_into(d, o->lowers[i]);
    }
    if (fsconfig(fsfd, FSCONFIG_SET_STRING, "lowerdir", value, 0) < 0)
        return fs_fail(err, fsfd, errno, "fsconfig lowerdir", o->target,
                       "overlay on %s: fsconfig lowerdir %s", o->target, value);
    return 0;
}

/* upperdir, workdir, create, fsmount, move_mount: the context's layers are set. */
static int ovl_finish(int fsfd, const struct ovl *o, struct pycrio_err *err)
{
    cleanup_close int mfd = -1;
    int rc;

    if (o->upper != NULL) {
        if ((rc = ovl_set_path_or_fail(fsfd, o, "upperdir", o->upper, 1, err)) < 0)
            return rc;
        if ((rc = ovl_set_path_or_fail(fsfd, o, "workdir", o->work, 1, err)) < 0)
            return rc;
    }
    if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
        char log[FS_LOG_MAX];
        int saved = errno;

        fs_log_read(fsfd, log, sizeof(log));
        return fail_log(err, saved, "fsconfig create", o->target,
                        log[0] ? log : "see dmesg, overlayfs logs the reason there",
                        "overlay on %s: fsconfig create", o->target);
    }
    mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, (o->flags & PYCRIO_MOUNT_RDONLY) ? MOUNT_ATTR_RDONLY : 0);
    if (mfd < 0)
        return fs_fail(err, fsfd, errno, "fsmount", o->target, "overlay on %s: fsmount", o->target);
    if (move_mount(mfd, "", AT_FDCWD, o->target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return fail_log(err, errno, "move_mount", o->target, NULL, "overlay on %s: move_mount",
                        o->target);
    return 0;
}

/* 0, -errno, or -ENOSYS (err untouched) when the caller should use mount(2). */
static int overlay_new_api(const struct ovl *o, struct pycrio_err *err)
{
    cleanup_close int fsfd = fsopen("overlay", FSOPEN_CLOEXEC);
    char log[FS_LOG_MAX];
    int rc;

    if (fsfd < 0) {
        if (errno == ENOSYS)
            return -ENOSYS;
        return fail_log(err, errno, "fsopen", o->target, NULL, "overlay on %s: fsopen overlay",
                        o->target);
    }
    if ((rc = set_source(fsfd, "overlay", o->target, err)) < 0)
        return rc;
    for (int i = 0; i < o->nlowers; i++) {
        if ((rc = ovl_set_path(fsfd, "lowerdir+", o->lowers[i], 0)) == 0)
            continue;
        fs_log_read(fsfd, log, sizeof(log));
        if (i == 0 && rc == -EINVAL && strstr(log, FS_LOG_UNKNOWN) != NULL) {
            /* Linux 6.5-6.7: no lowerdir+; a fresh context takes one lowerdir string. */
            close(fsfd);
            fsfd = fsopen("overlay", FSOPEN_CLOEXEC);
            if (fsfd < 0)
                return fail_log(err, errno, "fsopen", o->target, NULL,
                                "overlay on %s: fsopen overlay", o->target);
            if ((rc = set_source(fsfd, "overlay", o->target, err)) < 0)
                return rc;
            rc = ovl_set_lowerdir_string(fsfd, o, err);
            if (rc > 0)
                return -ENOSYS;
            if (rc < 0)
                return rc;
            break;
        }
        return fail_log(err, -rc, "fsconfig lowerdir+", o->lowers[i], log,
                        "overlay on %s: fsconfig lowerdir+ %s (layer %d of %d)%s", o->target,
                        o->lowers[i], i, o->nlowers,
                        strlen(o->lowers[i]) > FSCONFIG_VALUE_MAX
                            ? " (a path over 255 bytes needs Linux 6.13)"
                            : "");
    }
    return ovl_finish(fsfd, o, err);
}

int pycrio_mount_overlay(const char *target, const char *const *lowers, int nlowers,
                         const char *upper, const char *work, int flags, struct pycrio_err *err)
{
    struct ovl o = {target, lowers, nlowers, upper, work, flags};
    int rc;

    if (target == NULL || target[0] == '\0')
        return pycrio_err_set(err, EINVAL, "mount", "", "overlay: empty target");
    if ((flags & ~(PYCRIO_MOUNT_RDONLY | PYCRIO_MOUNT_NO_NEW_API)) != 0)
        return pycrio_err_set(err, EINVAL, "mount", target, "overlay on %s: invalid flags 0x%x",
                              target, flags);
    if (lowers == NULL || nlowers < 1 || nlowers > OVL_MAX_STACK)
        return pycrio_err_set(err, EINVAL, "mount", target,
                              "overlay on %s: %d lower layers, it takes 1 to %d", target,
                              lowers == NULL ? 0 : nlowers, OVL_MAX_STACK);
    for (int i = 0; i < nlowers; i++)
        if (lowers[i] == NULL || lowers[i][0] == '\0')
            return pycrio_err_set(err, EINVAL, "mount", target,
                                  "overlay on %s: lower layer %d is empty", target, i);
    if ((upper == NULL) != (work == NULL) || (upper != NULL && (!upper[0] || !work[0])))
        return pycrio_err_set(err, EINVAL, "mount", target,
                              "overlay on %s: upperdir and workdir go together", target);
    if (upper == NULL && nlowers < 2)
        return pycrio_err_set(err, EINVAL, "mount", target,
                              "overlay on %s: a read-only overlay needs at least 2 lower layers "
                              "(bind-mount a single layer read-only instead)",
                              target);
    if (!(flags & PYCRIO_MOUNT_NO_NEW_API) && !kernel_older_than(6, 5)) {
        rc = overlay_new_api(&o, err);
        if (rc != -ENOSYS)
            return rc;
    }
    return overlay_legacy(&o, err);
}

/* ---- bind ------------------------------------------------------------------------------- */

static int bind_fail(struct pycrio_err *err, int errnum, const char *step, const char *source,
                     const char *target)
{
    struct stat st;

    if ((errnum == ENOENT || errnum == ENOTDIR) && stat(source, &st) < 0)
        return pycrio_err_set(err, errnum, step, source, "bind %s onto %s: %s source %s: %s",
                              source, target, step, source, strerror(errnum));
    return pycrio_err_set(err, errnum, step, target, "bind %s onto %s: %s: %s", source, target,
                          step, strerror(errnum));
}

/* 0, -errno, or -ENOSYS (err untouched) when the caller should use mount(2). */
static int bind_new_api(const char *source, const char *target, int flags, struct pycrio_err *err)
{
    unsigned int rec = (flags & PYCRIO_MOUNT_REC) ? AT_RECURSIVE : 0;
    cleanup_close int fd = open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | rec);

    if (fd < 0)
        return errno == ENOSYS ? -ENOSYS : bind_fail(err, errno, "open_tree", source, target);
    if (flags & (PYCRIO_MOUNT_RDONLY | PYCRIO_MOUNT_PRIVATE)) {
        struct mount_attr attr = {
            .attr_set = (flags & PYCRIO_MOUNT_RDONLY) ? MOUNT_ATTR_RDONLY : 0,
            .propagation = (flags & PYCRIO_MOUNT_PRIVATE) ? MS_PRIVATE : 0,
        };

        if (mount_setattr(fd, "", AT_EMPTY_PATH | rec, &attr, sizeof(attr)) < 0)
            return errno == ENOSYS ? -ENOSYS
                                   : bind_fail(err, errno, "mount_setattr", source, target);
    }
    if (move_mount(fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return bind_fail(err, errno, "move_mount", source, target);
    return 0;
}

/* A step after the bind failed with saved: detach the bind and report both. */
static int undo_bind(struct pycrio_err *err, int saved, const char *source, const char *target,
                     const char *step)
{
    if (umount2(target, MNT_DETACH) < 0)
        return pycrio_err_set(err, saved, "mount", target,
                              "bind %s onto %s: %s: %s; undoing the bind failed too: %s", source,
                              target, step, strerror(saved), strerror(errno));
    return pycrio_err_set(err, saved, "mount", target, "bind %s onto %s: %s: %s", source, target,
                          step, strerror(saved));
}

static int bind_legacy(const char *source, const char *target, int flags, struct pycrio_err *err)
{
    static const struct {
        unsigned long st, ms;
    } keep[] = {{ST_NOSUID, MS_NOSUID},         {ST_NODEV, MS_NODEV},
                {ST_NOEXEC, MS_NOEXEC},         {ST_NOATIME, MS_NOATIME},
                {ST_NODIRATIME, MS_NODIRATIME}, {ST_RELATIME, MS_RELATIME}};
    unsigned long remount = MS_REMOUNT | MS_BIND | MS_RDONLY;
    struct statvfs sv;

    if ((flags & PYCRIO_MOUNT_REC) && (flags & PYCRIO_MOUNT_RDONLY))
        return pycrio_err_set(err, EOPNOTSUPP, "mount_setattr", target,
                              "bind %s onto %s: a recursive read-only bind needs mount_setattr "
                              "(Linux 5.12)",
                              source, target);
    if (mount(source, target, NULL, MS_BIND | ((flags & PYCRIO_MOUNT_REC) ? MS_REC : 0), NULL) < 0)
        return bind_fail(err, errno, "mount", source, target);
    if ((flags & PYCRIO_MOUNT_PRIVATE) &&
        mount(NULL, target, NULL, MS_PRIVATE | ((flags & PYCRIO_MOUNT_REC) ? MS_REC : 0), NULL) < 0)
        return undo_bind(err, errno, source, target, "making it private");
    if (!(flags & PYCRIO_MOUNT_RDONLY))
        return 0;
    /* A bind remount replaces the per-mount flags: keep nosuid, nodev, noexec and atime. */
    if (statvfs(target, &sv) == 0)
        for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
            if (sv.f_flag & keep[i].st)
                remount |= keep[i].ms;
    if (mount(NULL, target, NULL, remount, NULL) == 0)
        return 0;
    return undo_bind(err, errno, source, target, "read-only remount");
}

int pycrio_mount_bind(const char *source, const char *target, int flags, struct pycrio_err *err)
{
    int rc;

    if (source == NULL || source[0] == '\0' || target == NULL || target[0] == '\0')
        return pycrio_err_set(err, EINVAL, "mount", target ? target : "",
                              "bind: empty source or target");
    if ((flags & ~KNOWN_FLAGS) != 0)
        return pycrio_err_set(err, EINVAL, "mount", target, "bind onto %s: invalid flags 0x%x",
                              target, flags);
    if (!(flags & PYCRIO_MOUNT_NO_NEW_API)) {
        rc = bind_new_api(source, target, flags, err);
        if (rc != -ENOSYS)
            return rc;
    }
    return bind_legacy(source, target, flags, err);
}

/* ---- tmpfs ------------------------------------------------------------------------------ */

/* 0, -errno, or -ENOSYS (err untouched) when the caller should use mount(2). */
static int tmpfs_new_api(const char *target, const char *options, int flags, struct pycrio_err *err)
{
    unsigned int attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
    cleanup_close int fsfd = fsopen("tmpfs", FSOPEN_CLOEXEC);
    cleanup_close int mfd = -1;
    cleanup_free char *copy = NULL;
    char *save = NULL, *opt;
    int rc;

    if (fsfd < 0)
        return errno == ENOSYS ? -ENOSYS
                               : fail_log(err, errno, "fsopen", target, NULL,
                                          "tmpfs on %s: fsopen tmpfs", target);
    if ((rc = set_source(fsfd, "tmpfs", target, err)) < 0)
        return rc;
    if (options != NULL && (copy = strdup(options)) == NULL)
        return pycrio_err_set(err, ENOMEM, "mount", target, "tmpfs on %s: out of memory", target);
    for (opt = copy ? strtok_r(copy, ",", &save) : NULL; opt; opt = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(opt, '=');
        char step[PYCRIO_ERR_STEP_MAX];

        if (eq != NULL)
            *eq = '\0';
        rc = eq ? fsconfig(fsfd, FSCONFIG_SET_STRING, opt, eq + 1, 0)
                : fsconfig(fsfd, FSCONFIG_SET_FLAG, opt, NULL, 0);
        if (rc < 0) {
            snprintf(step, sizeof(step), "fsconfig %s", opt);
            return fs_fail(err, fsfd, errno, step, target, "tmpfs on %s: option %s%s%s", target,
                           opt, eq ? "=" : "", eq ? eq + 1 : "");
        }
    }
    if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return fs_fail(err, fsfd, errno, "fsconfig create", target, "tmpfs on %s: fsconfig create",
                       target);
    if (flags & PYCRIO_MOUNT_RDONLY)
        attrs |= MOUNT_ATTR_RDONLY;
    mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, attrs);
    if (mfd < 0)
        return fs_fail(err, fsfd, errno, "fsmount", target, "tmpfs on %s: fsmount", target);
    if (move_mount(mfd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return fail_log(err, errno, "move_mount", target, NULL, "tmpfs on %s: move_mount", target);
    return 0;
}

int pycrio_mount_tmpfs(const char *target, const char *options, int flags, struct pycrio_err *err)
{
    unsigned long msflags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
    long page = sysconf(_SC_PAGESIZE);
    int rc;

    if (target == NULL || target[0] == '\0')
        return pycrio_err_set(err, EINVAL, "mount", "", "tmpfs: empty target");
    if ((flags & ~(PYCRIO_MOUNT_RDONLY | PYCRIO_MOUNT_NO_NEW_API)) != 0)
        return pycrio_err_set(err, EINVAL, "mount", target, "tmpfs on %s: invalid flags 0x%x",
                              target, flags);
    if (options != NULL && strlen(options) >= (size_t)(page > 0 ? page : 4096))
        return pycrio_err_set(err, E2BIG, "mount", target,
                              "tmpfs on %s: options longer than a page", target);
    if (!(flags & PYCRIO_MOUNT_NO_NEW_API)) {
        rc = tmpfs_new_api(target, options, flags, err);
        if (rc != -ENOSYS)
            return rc;
    }
    if (flags & PYCRIO_MOUNT_RDONLY)
        msflags |= MS_RDONLY;
    if (mount("tmpfs", target, "tmpfs", msflags, options) < 0)
        return fail_log(err, errno, "mount", target, NULL, "tmpfs on %s: mount (options '%s')",
                        target, options ? options : "");
    return 0;
}

/* ---- unmount ---------------------------------------------------------------------------- */

int pycrio_unmount(const char *target, int flags, struct pycrio_err *err)
{
    if (target == NULL || target[0] == '\0')
        return pycrio_err_set(err, EINVAL, "umount2", "", "unmount: empty target");
    if ((flags & ~PYCRIO_UNMOUNT_DETACH) != 0)
        return pycrio_err_set(err, EINVAL, "umount2", target, "unmount %s: invalid flags 0x%x",
                              target, flags);
    if (umount2(target, ((flags & PYCRIO_UNMOUNT_DETACH) ? MNT_DETACH : 0) | UMOUNT_NOFOLLOW) == 0)
        return 1;
    if (errno == EINVAL || errno == ENOENT)
        return 0;
    return pycrio_err_set(err, errno, "umount2", target, "umount2 %s: %s", target, strerror(errno));
}
