/* util.c: small helpers of pycrio-monitor: errors, warnings on stderr, whole writes, clocks. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "monitor.h"

int mon_fail(struct monitor *m, int errnum, const char *fmt, ...)
{
    va_list ap;

    if (errnum <= 0)
        errnum = EIO;
    va_start(ap, fmt);
    vsnprintf(m->errmsg, sizeof(m->errmsg), fmt, ap);
    va_end(ap);
    return -errnum;
}

/* One line on the monitor's stderr (a file chosen by the daemon, or /dev/null). */
void mon_warn(struct monitor *m, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    int n = snprintf(line, sizeof(line), "pycrio-monitor[%d] %s: ", (int)m->self,
                     m->args.id ? m->args.id : "?");

    if (n < 0 || (size_t)n >= sizeof(line))
        n = 0;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    n = (int)strlen(line);
    line[n++] = '\n';
    (void)mon_write_all(STDERR_FILENO, line, (size_t)n);
}

/* write(2) until done; EINTR retried.  0 or -errno (EAGAIN included: the rest is not written). */
int mon_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read a small file from offset 0 into buf (NUL-terminated); bytes read or -errno. */
ssize_t mon_read_small(int fd, char *buf, size_t size)
{
    size_t got = 0;

    while (got + 1 < size) {
        ssize_t n = pread(fd, buf + got, size - 1 - got, (off_t)got);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    return (ssize_t)got;
}

int64_t mon_now_ns(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void mon_close(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* out = dir + "/" + name; -ENAMETOOLONG when it does not fit. */
int mon_path_join(char *out, size_t size, const char *dir, const char *name)
{
    int n = snprintf(out, size, "%s/%s", dir, name);

    return (n < 0 || (size_t)n >= size) ? -ENAMETOOLONG : 0;
}

/* A listening unix socket of `type` at path (a stale socket file there is replaced), created
 * 0600, non-blocking and close-on-exec.  On success the caller owns *fd_out and the file. */
int mon_listen_unix(struct monitor *m, const char *path, int type, int backlog, int *fd_out)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = strlen(path);
    mode_t old;
    int fd, saved;

    if (len >= sizeof(addr.sun_path))
        return mon_fail(m, ENAMETOOLONG, "socket path %s is longer than %zu bytes", path,
                        sizeof(addr.sun_path) - 1);
    memcpy(addr.sun_path, path, len + 1);
    fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return mon_fail(m, errno, "socket: %s", strerror(errno));
    (void)unlink(path); /* a stale socket of an earlier monitor */
    old = umask(077);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        saved = errno;
        umask(old);
        close(fd);
        return mon_fail(m, saved, "bind %s: %s", path, strerror(saved));
    }
    umask(old);
    if (listen(fd, backlog) < 0) {
        saved = errno;
        close(fd);
        (void)unlink(path);
        return mon_fail(m, saved, "listen %s: %s", path, strerror(saved));
    }
    *fd_out = fd;
    return 0;
}
