/* extract.c: pycrio_extract_layer, the driver: header after header, the entry, its data;
 * then the directories' mtimes, the stream's end, the digests.  See include/extract.h. */
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal/cleanup.h"
#include "internal/err_set.h"
#include "internal/extract.h"

#define KNOWN_FLAGS                                                                                \
    (PYCRIO_EXTRACT_NO_OPENAT2 | PYCRIO_EXTRACT_SYNC | PYCRIO_EXTRACT_NO_ISAL |                    \
     PYCRIO_EXTRACT_SERIAL)

int xfail(struct xctx *c, int errnum, const char *step, const char *fmt, ...)
{
    char msg[PYCRIO_ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->entry == NULL)
        return pycrio_err_set(c->err, errnum, step, "", "%s", msg);
    return pycrio_err_set(c->err, errnum, step, c->entry, "%s: %s", c->entry, msg);
}

int xfail_sys(struct xctx *c, int errnum, const char *step, const char *what)
{
    return xfail(c, errnum, step, "%s: %s: %s", what, step, strerror(errnum));
}

int pycrio_extract_features(void)
{
    struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT};
    int features = PYCRIO_FEATURE_ZSTD;
    long fd = syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof(how));

    if (fd >= 0) {
        close((int)fd);
        features |= PYCRIO_FEATURE_OPENAT2;
    }
    if (xcodec_have_isal())
        features |= PYCRIO_FEATURE_ISAL;
    return features;
}

static void ctx_free(struct xctx **cp)
{
    struct xctx *c = *cp;

    if (c == NULL)
        return;
    xpool_free(c->pool); /* first: its workers hold no fd of ours, but stop them before all else */
    if (c->root_fd >= 0)
        close(c->root_fd);
    for (int i = 0; i < XCACHE_SLOTS; i++)
        if (c->cache[i].fd >= 0)
            close(c->cache[i].fd);
    xstream_close(&c->s);
    xtar_free(&c->t);
    for (size_t i = 0; i < c->ndirtimes; i++)
        free(c->dirtimes[i].path);
    free(c->dirtimes);
    free(c);
}

/* Directory mtimes, last: creating entries changed them.  A directory that a later entry
 * removed is skipped. */
static int apply_dirtimes(struct xctx *c)
{
    char parent[PATH_MAX];

    for (size_t i = 0; i < c->ndirtimes; i++) {
        struct xdirtime *d = &c->dirtimes[i];
        struct timespec ts[2] = {d->mtime, d->mtime};
        cleanup_close int pfd = -1, fd = -1;
        const char *base = ".";

        c->entry = d->path[0] ? d->path : ".";
        if (d->path[0] != '\0')
            xpath_split(d->path, parent, &base);
        else
            parent[0] = '\0';
        pfd = xpath_resolve_dir(c, parent);
        if (pfd >= 0)
            fd = openat(pfd, base, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (futimens(fd, ts) < 0)
            return xfail_sys(c, errno, "futimens", "setting the directory mtime");
    }
    c->entry = NULL;
    return 0;
}

static int check_args(struct xctx *c, int in_fd, const char *dest_dir, int compression, int flags,
                      struct pycrio_extract_stats *stats)
{
    if (dest_dir == NULL || dest_dir[0] == '\0')
        return xfail(c, EINVAL, "extract", "empty destination directory");
    return xstream_check_args(c, "extract", in_fd, compression, flags & ~KNOWN_FLAGS, stats);
}

static int extract_entries(struct xctx *c)
{
    for (;;) {
        int rc = xtar_next(c);
        unsigned long long pad;

        if (rc <= 0)
            return rc;
        pad = c->e.type == XT_FILE ? (512 - c->e.size % 512) % 512 : 0;
        if ((rc = xentry_extract(c)) < 0 || (rc = xstream_skip(c, c->data_left + pad, "data")) < 0)
            return rc;
    }
}

static int sync_dest(struct xctx *c)
{
    cleanup_close int fd = openat(c->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0 || syncfs(fd) < 0)
        return xfail_sys(c, errno, "syncfs", "syncing the destination");
    return 0;
}

int pycrio_extract_layer(int in_fd, int tee_fd, const char *dest_dir, int compression, int flags,
                         struct pycrio_extract_stats *stats, struct pycrio_err *err)
{
    __attribute__((cleanup(ctx_free))) struct xctx *c = calloc(1, sizeof(*c));
    int rc;

    if (c == NULL)
        return pycrio_err_set(err, ENOMEM, "malloc", dest_dir, "allocating the context");
    c->root_fd = -1;
    for (int i = 0; i < XCACHE_SLOTS; i++)
        c->cache[i].fd = -1;
    c->err = err;
    c->stats = stats;
    if ((rc = check_args(c, in_fd, dest_dir, compression, flags, stats)) < 0)
        return rc;
    memset(stats, 0, sizeof(*stats));
    c->flags = flags;
    c->use_openat2 = !(flags & PYCRIO_EXTRACT_NO_OPENAT2);
    c->root_fd = open(dest_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (c->root_fd < 0)
        return pycrio_err_set(err, errno, "open", dest_dir, "opening the destination %s: %s",
                              dest_dir, strerror(errno));
    xentry_fast_init(c);
    if ((rc = xstream_open(c, in_fd, tee_fd, compression, flags & PYCRIO_EXTRACT_NO_ISAL)) < 0 ||
        (rc = extract_entries(c)) < 0 || (rc = xpool_drain(c)) < 0)
        return rc;
    c->entry = NULL;
    if ((rc = xstream_finish(c)) < 0 || (rc = apply_dirtimes(c)) < 0)
        return rc;
    if ((flags & PYCRIO_EXTRACT_SYNC) && (rc = sync_dest(c)) < 0)
        return rc;
    return 0;
}
