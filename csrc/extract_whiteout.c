/* extract_whiteout.c: OCI whiteouts, turned into what overlayfs understands.
 *
 *   .wh.NAME      -> NAME is a character device 0:0 (mode 0, root-owned) in the same
 *                    directory, replacing whatever an earlier entry put there
 *   .wh..wh..opq  -> the directory gets the xattr trusted.overlay.opaque=y
 *   .wh..wh.*     -> other AUFS metadata (.wh..wh.plnk, ...): skipped
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "internal/cleanup.h"
#include "internal/err_set.h"
#include "internal/extract.h"

#define WH_PREFIX ".wh."
#define WH_OPAQUE ".wh..wh..opq"

static int make_opaque(struct xctx *c, int dirfd)
{
    cleanup_close int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0)
        return xfail_sys(c, errno, "openat", "opening the opaque directory");
    if (fsetxattr(fd, "trusted.overlay.opaque", "y", 1, 0) < 0)
        return xfail_sys(c, errno, "setxattr", "setting trusted.overlay.opaque");
    c->stats->opaques++;
    return 1;
}

static int make_whiteout(struct xctx *c, int dirfd, const char *name)
{
    int rc;

    if (mknodat(dirfd, name, S_IFCHR | 0, makedev(0, 0)) < 0) {
        if (errno != EEXIST)
            return xfail_sys(c, errno, "mknodat", "creating the whiteout");
        if ((rc = xentry_remove(c, dirfd, name)) < 0)
            return rc;
        if (mknodat(dirfd, name, S_IFCHR | 0, makedev(0, 0)) < 0)
            return xfail_sys(c, errno, "mknodat", "creating the whiteout");
    }
    c->stats->whiteouts++;
    return 1;
}

int xwhiteout_handle(struct xctx *c, int dirfd, const char *base)
{
    const char *name;

    if (strncmp(base, WH_PREFIX, strlen(WH_PREFIX)) != 0)
        return 0;
    name = base + strlen(WH_PREFIX);
    if (strcmp(base, WH_OPAQUE) == 0)
        return make_opaque(c, dirfd);
    if (strncmp(name, WH_PREFIX, strlen(WH_PREFIX)) == 0)
        return 1;
    if (name[0] == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return xfail(c, EINVAL, "whiteout", "invalid whiteout name '%s'", base);
    return make_whiteout(c, dirfd, name);
}
