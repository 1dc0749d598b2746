/* cleanup.h: __attribute__((cleanup)) helpers for fds, heap buffers and DIR streams.
 * A variable declared with one of these is released when it goes out of scope; set it to -1
 * or NULL (or use steal_fd/steal_ptr) to hand ownership elsewhere.  errno is preserved. */
#ifndef PYCRIO_INTERNAL_CLEANUP_H
#define PYCRIO_INTERNAL_CLEANUP_H

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static inline void pycrio_closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;

        close(*fd);
        errno = saved;
    }
}

static inline void pycrio_freep(void *p)
{
    int saved = errno;

    free(*(void **)p);
    errno = saved;
}

static inline void pycrio_closedirp(DIR **d)
{
    if (*d != NULL) {
        int saved = errno;

        closedir(*d);
        errno = saved;
    }
}

static inline int steal_fd(int *fd)
{
    int ret = *fd;

    *fd = -1;
    return ret;
}

#define cleanup_close __attribute__((cleanup(pycrio_closep)))
#define cleanup_free __attribute__((cleanup(pycrio_freep)))
#define cleanup_dir __attribute__((cleanup(pycrio_closedirp)))

#endif
