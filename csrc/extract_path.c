/* extract_path.c: where an entry goes, always beneath the root (dest_dir).
 *
 * A tar path is first cleaned lexically as if it were below "/": "", "." and ".." components
 * go, ".." never climbs above the root, so "../../x" and "/abs/x" land at <root>/x and
 * <root>/abs/x.  The parent directory is then opened with openat2(RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS): symlinks met on the way are followed as if the root were "/".
 * Without openat2 (ENOSYS, or PYCRIO_EXTRACT_NO_OPENAT2) the same resolution is done by hand:
 * one openat(O_PATH|O_NOFOLLOW) per component, symlinks read with readlinkat and spliced into
 * the rest of the path (absolute targets restart at the root), ".." clamped at the root, at
 * most XLINKS_MAX symlinks (ELOOP).  Missing parents are created (0755).  The final component
 * is never resolved here: extract_entry.c creates it with *at() calls that do not follow it.
 *
 * The last few parents stay open (tar entries come grouped by directory, depth first);
 * anything removed from the tree invalidates them all, so the cache never changes a result.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal/cleanup.h"
#include "internal/err_set.h"
#include "internal/extract.h"

int xpath_clean(struct xctx *c, const char *name, char *out, size_t size)
{
    size_t len = 0;

    out[0] = '\0';
    while (*name) {
        const char *end = strchrnul(name, '/');
        size_t n = (size_t)(end - name);

        if (n == 0 || (n == 1 && name[0] == '.')) {
            /* nothing */
        } else if (n == 2 && name[0] == '.' && name[1] == '.') {
            char *slash = strrchr(out, '/');

            len = slash ? (size_t)(slash - out) : 0;
            out[len] = '\0';
        } else {
            if (n > NAME_MAX || len + 1 + n >= size)
                return xfail(c, ENAMETOOLONG, "tar header", "name too long");
            if (len > 0)
                out[len++] = '/';
            memcpy(out + len, name, n);
            len += n;
            out[len] = '\0';
        }
        name = *end ? end + 1 : end;
    }
    return 0;
}

void xpath_split(const char *path, char *parent, const char **base)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;

    memcpy(parent, path, n);
    parent[n] = '\0';
    *base = slash ? slash + 1 : path;
}

static int dup_root(struct xctx *c)
{
    int fd = fcntl(c->root_fd, F_DUPFD_CLOEXEC, 0);

    return fd < 0 ? -errno : fd;
}

static int openat2_dir(struct xctx *c, const char *path)
{
    struct open_how how = {
        .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
        .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };

    for (int tries = 0;; tries++) {
        long fd = syscall(SYS_openat2, c->root_fd, path, &how, sizeof(how));

        if (fd >= 0)
            return (int)fd;
        if ((errno == EAGAIN || errno == EINTR) && tries < 64)
            continue; /* a concurrent rename somewhere: retry, as the man page says */
        return -errno;
    }
}

/* Re-open a physical (symlink-free) path from the root, after a "..". */
static int reopen_physical(struct xctx *c, const char *path)
{
    cleanup_close int cur = dup_root(c);
    char comp[NAME_MAX + 1];

    while (cur >= 0 && *path) {
        const char *end = strchrnul(path, '/');
        int fd;

        memcpy(comp, path, (size_t)(end - path));
        comp[end - path] = '\0';
        fd = openat(cur, comp, O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
            return -errno;
        close(cur);
        cur = fd;
        path = *end ? end + 1 : end;
    }
    return steal_fd(&cur);
}

/* Splice a symlink's target in front of the unresolved rest of the path (rest points into
 * buf).  Returns the new start of the rest (buf) or NULL when it would not fit. */
static char *splice_link(char *buf, size_t size, const char *rest, const char *target, size_t tlen)
{
    size_t rlen = strlen(rest);

    if (tlen + 1 + rlen + 1 > size)
        return NULL;
    memmove(buf + tlen + 1, rest, rlen + 1);
    memcpy(buf, target, tlen);
    buf[tlen] = '/';
    return buf;
}

/* Follow the symlink opened as *fd; returns 0 (rest updated, *fd closed) or -errno. */
static int follow_link(int *fd, char *buf, size_t size, char **rest, int *links)
{
    char target[PATH_MAX];
    ssize_t len = readlinkat(*fd, "", target, sizeof(target));

    close(steal_fd(fd));
    if (++*links > XLINKS_MAX)
        return -ELOOP;
    if (len < 0)
        return -errno;
    if (len == 0)
        return -ENOENT;
    if ((size_t)len >= sizeof(target))
        return -ENAMETOOLONG;
    *rest = splice_link(buf, size, *rest, target, (size_t)len);
    return *rest ? 0 : -ENAMETOOLONG;
}

/* The fallback resolver: the directory `path` beneath the root, as RESOLVE_IN_ROOT would. */
static int walk_dir(struct xctx *c, const char *path)
{
    char buf[2 * PATH_MAX], resolved[PATH_MAX] = "", comp[NAME_MAX + 1];
    char *rest = buf;
    cleanup_close int cur = dup_root(c);
    size_t rlen = 0;
    int links = 0;

    if (strlen(path) >= sizeof(buf))
        return -ENAMETOOLONG;
    memcpy(buf, path, strlen(path) + 1);
    while (cur >= 0 && *rest) {
        char *end = strchrnul(rest, '/');
        size_t n = (size_t)(end - rest);
        struct stat st;
        int fd, rc;

        if (n > NAME_MAX)
            return -ENAMETOOLONG;
        memcpy(comp, rest, n);
        comp[n] = '\0';
        rest = *end ? end + 1 : end;
        if (n == 0 || strcmp(comp, ".") == 0)
            continue;
        if (strcmp(comp, "..") == 0) {
            char *slash = strrchr(resolved, '/');

            if (rlen == 0)
                continue; /* clamped at the root */
            rlen = slash ? (size_t)(slash - resolved) : 0;
            resolved[rlen] = '\0';
            close(cur);
            cur = reopen_physical(c, resolved);
            continue;
        }
        fd = openat(cur, comp, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            return -errno;
        if (fstat(fd, &st) < 0) {
            rc = -errno;
            close(fd);
            return rc;
        }
        if (S_ISLNK(st.st_mode)) {
            rc = follow_link(&fd, buf, sizeof(buf), &rest, &links);
            if (rc < 0)
                return rc;
            if (buf[0] == '/') { /* absolute target: restart at the root */
                close(cur);
                cur = dup_root(c);
                rlen = 0;
                resolved[0] = '\0';
            }
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            close(fd);
            return -ENOTDIR;
        }
        if (rlen + 1 + n >= sizeof(resolved)) {
            close(fd);
            return -ENAMETOOLONG;
        }
        if (rlen > 0)
            resolved[rlen++] = '/';
        memcpy(resolved + rlen, comp, n + 1);
        rlen += n;
        close(cur);
        cur = fd;
    }
    return cur < 0 ? cur : steal_fd(&cur);
}

int xpath_resolve_dir(struct xctx *c, const char *path)
{
    if (path[0] == '\0')
        return dup_root(c);
    if (c->use_openat2) {
        int fd = openat2_dir(c, path);

        if (fd != -ENOSYS)
            return fd;
        c->use_openat2 = false;
    }
    return walk_dir(c, path);
}

/* Resolve `path`, creating its missing directories one by one. */
static int create_dirs(struct xctx *c, const char *path)
{
    char prefix[PATH_MAX];
    cleanup_close int prev = dup_root(c);
    const char *p = path;

    while (prev >= 0 && *p) {
        const char *end = strchrnul(p, '/');
        size_t n = (size_t)(end - path);
        int fd;

        memcpy(prefix, path, n);
        prefix[n] = '\0';
        fd = xpath_resolve_dir(c, prefix);
        if (fd == -ENOENT) {
            const char *comp = prefix + (p - path);

            if (mkdirat(prev, comp, 0755) == 0)
                (void)fchmodat(prev, comp, 0755, 0); /* the daemon's umask must not matter */
            else if (errno != EEXIST)
                return -errno;
            fd = xpath_resolve_dir(c, prefix); /* still ENOENT: a dangling symlink */
        }
        if (fd < 0)
            return fd;
        close(prev);
        prev = fd;
        p = *end ? end + 1 : end;
    }
    return steal_fd(&prev);
}

static struct xparent *cache_lookup(struct xctx *c, const char *parent)
{
    struct xparent *victim = &c->cache[0];

    for (int i = 0; i < XCACHE_SLOTS; i++) {
        struct xparent *slot = &c->cache[i];

        if (slot->valid && strcmp(slot->path, parent) == 0) {
            slot->used = ++c->cache_clock;
            return slot;
        }
        if (!slot->valid || (victim->valid && slot->used < victim->used))
            victim = slot;
    }
    return victim;
}

int xpath_parent(struct xctx *c, const char *parent, bool create)
{
    struct xparent *slot = cache_lookup(c, parent);
    int fd;

    if (slot->valid && strcmp(slot->path, parent) == 0)
        return slot->fd;
    fd = xpath_resolve_dir(c, parent);
    if (fd == -ENOENT && create)
        fd = create_dirs(c, parent);
    if (fd < 0)
        return xfail(c, -fd, "resolve", "resolving its directory '%s' beneath the root: %s", parent,
                     strerror(-fd));
    if (slot->fd >= 0) /* not in use: entries resolve their parent once, before any work */
        close(slot->fd);
    slot->fd = fd;
    slot->valid = true;
    slot->used = ++c->cache_clock;
    memcpy(slot->path, parent, strlen(parent) + 1);
    return fd;
}

void xpath_invalidate(struct xctx *c)
{
    for (int i = 0; i < XCACHE_SLOTS; i++)
        c->cache[i].valid = false;
}
