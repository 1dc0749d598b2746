/* fdio.h: descriptor helpers shared by the C sources (internal).
 * Both are async-signal-safe (write, close_range only): usable in a child between clone and _exit.
 */
#ifndef PYCRIO_INTERNAL_FDIO_H
#define PYCRIO_INTERNAL_FDIO_H

#include <stddef.h>

/* Write all len bytes, retrying short writes and EINTR. 0, or -errno (errno set too). */
int pycrio_write_all(int fd, const void *buf, size_t len);

/* Close every descriptor >= 3 except the n listed in keep (any order; negative entries ignored). */
void pycrio_close_fds_except(const int *keep, int n);

#endif
