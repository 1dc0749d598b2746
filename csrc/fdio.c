/* fdio.c: writing whole buffers and closing inherited descriptors (async-signal-safe). */
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal/fdio.h"

int pycrio_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0) {
            errno = EIO;
            return -EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void pycrio_close_fds_except(const int *keep, int n)
{
    unsigned int next = 3;

    for (;;) {
        int lowest = -1;

        for (int i = 0; i < n; i++)
            if (keep[i] >= (int)next && (lowest < 0 || keep[i] < lowest))
                lowest = keep[i];
        if (lowest < 0) {
            syscall(SYS_close_range, next, ~0U, 0);
            return;
        }
        if ((unsigned int)lowest > next)
            syscall(SYS_close_range, next, (unsigned int)lowest - 1, 0);
        next = (unsigned int)lowest + 1;
    }
}
