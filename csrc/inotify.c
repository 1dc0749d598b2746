/* inotify.c: inotify_init1 / inotify_add_watch / inotify_rm_watch for the daemon's exit watcher. */
#include <errno.h>
#include <string.h>
#include <sys/inotify.h>

#include "internal/err_set.h"
#include "include/inotify.h"

_Static_assert(PYCRIO_IN_CLOSE_WRITE == IN_CLOSE_WRITE, "IN_CLOSE_WRITE");
_Static_assert(PYCRIO_IN_MOVED_FROM == IN_MOVED_FROM, "IN_MOVED_FROM");
_Static_assert(PYCRIO_IN_MOVED_TO == IN_MOVED_TO, "IN_MOVED_TO");
_Static_assert(PYCRIO_IN_CREATE == IN_CREATE, "IN_CREATE");
_Static_assert(PYCRIO_IN_DELETE == IN_DELETE, "IN_DELETE");
_Static_assert(PYCRIO_IN_DELETE_SELF == IN_DELETE_SELF, "IN_DELETE_SELF");
_Static_assert(PYCRIO_IN_Q_OVERFLOW == IN_Q_OVERFLOW, "IN_Q_OVERFLOW");
_Static_assert(PYCRIO_IN_IGNORED == IN_IGNORED, "IN_IGNORED");
_Static_assert(PYCRIO_IN_ONLYDIR == IN_ONLYDIR, "IN_ONLYDIR");
_Static_assert(PYCRIO_IN_ISDIR == (int)IN_ISDIR, "IN_ISDIR");

int pycrio_inotify_init(struct pycrio_err *err)
{
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);

    if (fd < 0) {
        int saved = errno;

        return pycrio_err_set(err, saved, "inotify_init1", "", "inotify_init1: %s",
                              strerror(saved));
    }
    return fd;
}

int pycrio_inotify_add_watch(int fd, const char *path, unsigned int mask, struct pycrio_err *err)
{
    int wd;

    if (path == NULL || path[0] == '\0')
        return pycrio_err_set(err, EINVAL, "inotify_add_watch", "", "empty path");
    wd = inotify_add_watch(fd, path, mask);
    if (wd < 0) {
        int saved = errno;

        return pycrio_err_set(err, saved, "inotify_add_watch", path, "inotify_add_watch %s: %s",
                              path, strerror(saved));
    }
    return wd;
}

int pycrio_inotify_rm_watch(int fd, int wd, struct pycrio_err *err)
{
    if (inotify_rm_watch(fd, wd) < 0) {
        int saved = errno;

        return pycrio_err_set(err, saved, "inotify_rm_watch", "", "inotify_rm_watch %d: %s", wd,
                              strerror(saved));
    }
    return 0;
}
