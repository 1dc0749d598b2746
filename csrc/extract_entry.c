/* extract_entry.c: creating one entry in its (already resolved) parent directory.
 *
 * The final component is created with calls that never follow it (openat O_CREAT|O_EXCL|
 * O_NOFOLLOW, mkdirat, symlinkat, mknodat, linkat without AT_SYMLINK_FOLLOW); metadata goes
 * through the new fd (fchown, fchmod, fsetxattr, futimens) or through *at() calls with
 * AT_SYMLINK_NOFOLLOW.  A later entry replaces an earlier one: a non-directory is unlinked, a
 * directory that a non-directory replaces is removed with its tree, a directory over a
 * directory is kept and its metadata updated.  Ownership is set before the mode (chown clears
 * setuid/setgid) and file capabilities last (a write or chown clears security.capability).
 * Directory mtimes are deferred to the end (extract.c), creating entries changes them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "internal/cleanup.h"
#include "internal/err_set.h"
#include "internal/extract.h"
#include "internal/fdio.h"

#define REMOVE_DEPTH_MAX 2048

static int remove_tree(int parent, const char *name, int depth)
{
    cleanup_close int fd = -1;
    cleanup_dir DIR *d = NULL;
    struct dirent *de;

    if (depth > REMOVE_DEPTH_MAX)
        return -ELOOP;
    fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    d = fdopendir(fd);
    if (d == NULL)
        return -errno;
    fd = -1; /* owned by d */
    for (errno = 0; (de = readdir(d)) != NULL; errno = 0) {
        struct stat st;
        bool isdir = de->d_type == DT_DIR;
        int rc = 0;

        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (de->d_type == DT_UNKNOWN &&
            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
            isdir = S_ISDIR(st.st_mode);
        if (isdir)
            rc = remove_tree(dirfd(d), de->d_name, depth + 1);
        else if (unlinkat(dirfd(d), de->d_name, 0) < 0)
            rc = -errno;
        if (rc < 0)
            return rc;
    }
    if (errno != 0)
        return -errno;
    return unlinkat(parent, name, AT_REMOVEDIR) < 0 ? -errno : 0;
}

int xentry_remove(struct xctx *c, int dirfd, const char *name)
{
    int rc = xpool_drain(c); /* a removed tree may hold queued files */

    return rc < 0 ? rc : xentry_remove_now(c, dirfd, name);
}

int xentry_remove_now(struct xctx *c, int dirfd, const char *name)
{
    struct stat st;
    int rc = 0;

    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : xfail_sys(c, errno, "fstatat", "replacing an earlier entry");
    xpath_invalidate(c);
    if (S_ISDIR(st.st_mode))
        rc = remove_tree(dirfd, name, 0);
    else if (unlinkat(dirfd, name, 0) < 0)
        rc = -errno;
    if (rc < 0)
        return xfail_sys(c, -rc, S_ISDIR(st.st_mode) ? "remove tree" : "unlinkat",
                         "removing an earlier entry it replaces");
    return 0;
}

int xentry_chown_nofollow(struct xctx *c, int dirfd, const char *name, unsigned int uid,
                          unsigned int gid)
{
    if (fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
        return xfail_sys(c, errno, "fchownat", "setting ownership");
    return 0;
}

/* fd >= 0: fsetxattr on it; else lsetxattr on /proc/self/fd/<dirfd>/<name> (no follow of the
 * final component; a symlink or device cannot be opened for fsetxattr). */
static int set_xattrs(struct xctx *c, int fd, int dirfd, const char *name)
{
    struct xentry *e = &c->e;
    char path[64 + NAME_MAX];

    if (fd < 0 && e->nxattrs > 0)
        snprintf(path, sizeof(path), "/proc/self/fd/%d/%s", dirfd, name);
    for (size_t i = 0; i < e->nxattrs; i++) {
        const struct xattr_kv *x = &e->xattrs[i];
        int rc;

        if (strncmp(x->name, "trusted.overlay.", 16) == 0) { /* overlay's own: never trusted */
            c->stats->xattrs_skipped++;
            continue;
        }
        rc = fd >= 0 ? fsetxattr(fd, x->name, x->value, x->len, 0)
                     : lsetxattr(path, x->name, x->value, x->len, 0);
        if (rc < 0 && errno == ENOTSUP) { /* the filesystem has no such namespace */
            c->stats->xattrs_skipped++;
            continue;
        }
        if (rc < 0)
            return xfail(c, errno, "setxattr", "setting xattr %s: %s", x->name, strerror(errno));
        c->stats->xattrs++;
    }
    return 0;
}

/* Ownership, then mode (chown clears setuid), then xattrs, through an open fd. */
static int set_meta_fd(struct xctx *c, int fd)
{
    struct xentry *e = &c->e;

    if (fchown(fd, e->uid, e->gid) < 0)
        return xfail_sys(c, errno, "fchown", "setting ownership");
    if (fchmod(fd, e->mode) < 0)
        return xfail_sys(c, errno, "fchmod", "setting the mode");
    return set_xattrs(c, fd, -1, NULL);
}

static int set_mtime_at(struct xctx *c, int dirfd, const char *name)
{
    struct timespec ts[2] = {c->e.mtime, c->e.mtime};

    if (utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW) < 0)
        return xfail_sys(c, errno, "utimensat", "setting the mtime");
    return 0;
}

/* The entry's data, straight from the decoder's output buffer into fd. */
static int write_data(struct xctx *c, int fd)
{
    while (c->data_left > 0) {
        const unsigned char *p;
        size_t max = c->data_left > XBUF_SIZE ? XBUF_SIZE : (size_t)c->data_left;
        long got = xstream_peek(c, &p, max);
        int rc;

        if (got < 0)
            return (int)got;
        if (got == 0)
            return xfail(c, EIO, "read", "truncated tar stream in file data (%llu bytes missing)",
                         c->data_left);
        rc = pycrio_write_all(fd, p, (size_t)got);
        if (rc < 0)
            return xfail_sys(c, -rc, "write", "writing file data");
        xstream_consume(&c->s, (size_t)got);
        c->data_left -= (unsigned long long)got;
    }
    return 0;
}

void xentry_fast_init(struct xctx *c)
{
    char buf[4096];
    const char *line;
    struct stat st;
    ssize_t n = -1;
    int fd = open("/proc/thread-self/status", O_RDONLY | O_CLOEXEC);

    c->umask = -1;
    if (fd >= 0) {
        do
            n = read(fd, buf, sizeof(buf) - 1);
        while (n < 0 && errno == EINTR);
        close(fd);
    }
    if (n > 0) {
        buf[n] = '\0';
        line = strstr(buf, "\nUmask:\t");
        if (line != NULL)
            c->umask = (int)(strtoul(line + 8, NULL, 8) & 0777);
    }
    c->root_owner = geteuid() == 0 && getegid() == 0;
    c->sgid_dirs = fstat(c->root_fd, &st) < 0 || (st.st_mode & S_ISGID) != 0;
}

/* A file the layer wants root:root with permission bits the umask keeps is created with its
 * mode and owner final at once: no fchown, no fchmod (two of the six calls per file). */
static bool fast_file(const struct xctx *c)
{
    const struct xentry *e = &c->e;

    return c->umask >= 0 && c->root_owner && !c->sgid_dirs && e->uid == 0 && e->gid == 0 &&
           (e->mode & ~0777u) == 0 && (e->mode & (unsigned int)c->umask) == 0;
}

static int make_file(struct xctx *c, int dirfd, const char *name)
{
    const int oflags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    const bool fast = fast_file(c);
    const mode_t mode = fast ? (mode_t)c->e.mode : 0600;
    cleanup_close int fd = -1;
    struct timespec ts[2] = {c->e.mtime, c->e.mtime};
    int rc = xpool_file(c, dirfd, name, fast);

    if (rc != 0)
        return rc < 0 ? rc : 0; /* queued: a worker writes it */
    fd = openat(dirfd, name, oflags, mode);
    if (fd < 0 && errno == EEXIST) {
        if ((rc = xentry_remove(c, dirfd, name)) < 0)
            return rc;
        fd = openat(dirfd, name, oflags, mode);
    }
    if (fd < 0)
        return xfail_sys(c, errno, "openat", "creating the file");
    if ((rc = write_data(c, fd)) < 0)
        return rc;
    if ((rc = fast ? set_xattrs(c, fd, -1, NULL) : set_meta_fd(c, fd)) < 0)
        return rc;
    if (futimens(fd, ts) < 0)
        return xfail_sys(c, errno, "futimens", "setting the mtime");
    c->stats->files++;
    return 0;
}

static int dir_add_time(struct xctx *c, const char *path)
{
    struct xdirtime *d;

    if (c->ndirtimes == c->dirtimes_cap) {
        size_t cap = c->dirtimes_cap ? 2 * c->dirtimes_cap : 256;

        d = reallocarray(c->dirtimes, cap, sizeof(*d));
        if (d == NULL)
            return xfail(c, ENOMEM, "malloc", "directory list");
        c->dirtimes = d;
        c->dirtimes_cap = cap;
    }
    d = &c->dirtimes[c->ndirtimes];
    d->path = strdup(path);
    if (d->path == NULL)
        return xfail(c, ENOMEM, "malloc", "directory list");
    d->mtime = c->e.mtime;
    c->ndirtimes++;
    return 0;
}

/* A directory: kept if one is there, else created (replacing a non-directory). */
static int make_dir(struct xctx *c, int dirfd, const char *name)
{
    cleanup_close int fd = -1;
    struct stat st;
    int rc;

    if (mkdirat(dirfd, name, 0700) < 0) {
        if (errno != EEXIST)
            return xfail_sys(c, errno, "mkdirat", "creating the directory");
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return xfail_sys(c, errno, "fstatat", "checking what is there");
        if (!S_ISDIR(st.st_mode)) {
            if ((rc = xentry_remove(c, dirfd, name)) < 0)
                return rc;
            if (mkdirat(dirfd, name, 0700) < 0)
                return xfail_sys(c, errno, "mkdirat", "creating the directory");
        }
    }
    fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return xfail_sys(c, errno, "openat", "opening the directory");
    if ((rc = set_meta_fd(c, fd)) < 0 || (rc = dir_add_time(c, c->clean)) < 0)
        return rc;
    if (c->e.mode & S_ISGID)
        c->sgid_dirs = true; /* files below it get its group: fchown them */
    c->stats->dirs++;
    return 0;
}

/* The root itself ("./" in most layers): its metadata only. */
static int make_root(struct xctx *c)
{
    cleanup_close int fd = -1;
    int rc;

    if (c->e.type != XT_DIR)
        return xfail(c, EINVAL, "tar header", "a non-directory entry names the root");
    fd = openat(c->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return xfail_sys(c, errno, "openat", "opening the root");
    if ((rc = set_meta_fd(c, fd)) < 0 || (rc = dir_add_time(c, "")) < 0)
        return rc;
    if (c->e.mode & S_ISGID)
        c->sgid_dirs = true;
    c->stats->dirs++;
    return 0;
}

static int make_symlink(struct xctx *c, int dirfd, const char *name)
{
    int rc;

    if (symlinkat(c->e.linkname, dirfd, name) < 0) {
        if (errno != EEXIST)
            return xfail_sys(c, errno, "symlinkat", "creating the symlink");
        if ((rc = xentry_remove(c, dirfd, name)) < 0)
            return rc;
        if (symlinkat(c->e.linkname, dirfd, name) < 0)
            return xfail_sys(c, errno, "symlinkat", "creating the symlink");
    }
    if ((rc = xentry_chown_nofollow(c, dirfd, name, c->e.uid, c->e.gid)) < 0 ||
        (rc = set_xattrs(c, -1, dirfd, name)) < 0 || (rc = set_mtime_at(c, dirfd, name)) < 0)
        return rc;
    c->stats->symlinks++;
    return 0;
}

static int make_node(struct xctx *c, int dirfd, const char *name)
{
    struct xentry *e = &c->e;
    mode_t type = e->type == XT_CHAR ? S_IFCHR : e->type == XT_BLOCK ? S_IFBLK : S_IFIFO;
    dev_t dev = type == S_IFIFO ? 0 : makedev(e->devmajor, e->devminor);
    int rc;

    if (mknodat(dirfd, name, type | 0600, dev) < 0) {
        if (errno != EEXIST)
            return xfail_sys(c, errno, "mknodat", "creating the node");
        if ((rc = xentry_remove(c, dirfd, name)) < 0)
            return rc;
        if (mknodat(dirfd, name, type | 0600, dev) < 0)
            return xfail_sys(c, errno, "mknodat", "creating the node");
    }
    if ((rc = xentry_chown_nofollow(c, dirfd, name, e->uid, e->gid)) < 0)
        return rc;
    /* fchmodat follows a symlink, but we just created a node here and nothing else writes. */
    if (fchmodat(dirfd, name, e->mode, 0) < 0)
        return xfail_sys(c, errno, "fchmodat", "setting the mode");
    if ((rc = set_xattrs(c, -1, dirfd, name)) < 0 || (rc = set_mtime_at(c, dirfd, name)) < 0)
        return rc;
    if (type == S_IFIFO)
        c->stats->fifos++;
    else
        c->stats->devices++;
    return 0;
}

/* The hard link target is resolved beneath the root too; it must exist, not be a directory,
 * and is linked without following it (a link to a symlink links the symlink). */
static int make_hardlink(struct xctx *c, int dirfd, const char *name)
{
    char target[PATH_MAX], tparent[PATH_MAX];
    const char *tbase;
    cleanup_close int tfd = -1;
    struct stat st, cur;
    int rc;

    if ((rc = xpath_clean(c, c->e.linkname, target, sizeof(target))) < 0)
        return rc;
    if (target[0] == '\0')
        return xfail(c, EPERM, "linkat", "hard link to the root directory");
    xpath_split(target, tparent, &tbase);
    tfd = xpath_resolve_dir(c, tparent);
    if (tfd < 0 || fstatat(tfd, tbase, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return xfail(c, tfd < 0 ? -tfd : errno, "linkat", "hard link target '%s': %s",
                     c->e.linkname, strerror(tfd < 0 ? -tfd : errno));
    if (S_ISDIR(st.st_mode))
        return xfail(c, EPERM, "linkat", "hard link target '%s' is a directory", c->e.linkname);
    if (linkat(tfd, tbase, dirfd, name, 0) < 0) {
        if (errno != EEXIST)
            return xfail_sys(c, errno, "linkat", "creating the hard link");
        if (fstatat(dirfd, name, &cur, AT_SYMLINK_NOFOLLOW) == 0 && cur.st_ino == st.st_ino &&
            cur.st_dev == st.st_dev)
            goto done; /* already that file (a link to itself, or a repeated link) */
        if ((rc = xentry_remove(c, dirfd, name)) < 0)
            return rc;
        if (linkat(tfd, tbase, dirfd, name, 0) < 0)
            return xfail_sys(c, errno, "linkat", "creating the hard link");
    }
done:
    c->stats->hardlinks++;
    return 0;
}

int xentry_extract(struct xctx *c)
{
    char parent[PATH_MAX];
    const char *base;
    int rc, dirfd;

    if ((rc = xpath_clean(c, c->e.name, c->clean, sizeof(c->clean))) < 0)
        return rc;
    if (c->clean[0] == '\0')
        return (rc = xpool_before(c, "", "")) < 0 ? rc : make_root(c);
    xpath_split(c->clean, parent, &base);
    if ((rc = xpool_before(c, c->clean, base)) < 0)
        return rc;
    dirfd = xpath_parent(c, parent, true);
    if (dirfd < 0 && c->pool != NULL) {
        /* Through a symlink the parent may lead to a file still queued: its error is for the
         * written tree to decide (ENOTDIR where it was ENOENT). */
        if ((rc = xpool_drain(c)) < 0)
            return rc;
        dirfd = xpath_parent(c, parent, true);
    }
    if (dirfd < 0)
        return dirfd;
    rc = xwhiteout_handle(c, dirfd, base);
    if (rc != 0)
        return rc < 0 ? rc : 0;
    switch (c->e.type) {
    case XT_FILE:
        return make_file(c, dirfd, base);
    case XT_DIR:
        return make_dir(c, dirfd, base);
    case XT_SYMLINK:
        return make_symlink(c, dirfd, base);
    case XT_HARDLINK:
        return make_hardlink(c, dirfd, base);
    case XT_CHAR:
    case XT_BLOCK:
    case XT_FIFO:
        return make_node(c, dirfd, base);
    }
    return xfail(c, EINVAL, "tar header", "unknown entry type");
}
