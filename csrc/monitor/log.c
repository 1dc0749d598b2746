/* log.c: the CRI log file: `<RFC3339Nano local time> <stdout|stderr> <F|P> <text>\n` per line.
 *
 * Each read of container output is split at newlines: a piece ending in '\n' is written as F, a
 * trailing piece without one (a partial line, or a read that filled the 16 KiB buffer) as P, with
 * a '\n' added.  All pieces of one read share its timestamp and go out in one writev(2), with
 * O_APPEND.  The file is opened O_NONBLOCK so a FIFO or a stuck reader never blocks the monitor;
 * a failed write drops the rest of that read and is reported once on stderr until writes work
 * again.  With --log-max-size, a write that would grow the file past it first replaces the file
 * with an empty one (written beside it as <path>.tmp, renamed over it: conmon's behaviour).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "monitor.h"

#define LOG_OPEN_FLAGS (O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)

static int open_log(struct monitor *m, const char *path, int extra_flags, int *fd_out,
                    long long *size_out)
{
    struct stat st;
    int fd = open(path, LOG_OPEN_FLAGS | extra_flags, 0640);

    if (fd < 0)
        return mon_fail(m, errno, "open log %s: %s", path, strerror(errno));
    *size_out = fstat(fd, &st) == 0 ? (long long)st.st_size : 0;
    *fd_out = fd;
    return 0;
}

int mon_log_open(struct monitor *m)
{
    if (m->args.log_path == NULL)
        return 0;
    m->log.fd = -1;
    return open_log(m, m->args.log_path, 0, &m->log.fd, &m->log.size);
}

/* The control socket's "reopen": a new file at the same path (the old one was renamed away).
 * On failure the old descriptor stays in use. */
int mon_log_reopen(struct monitor *m)
{
    long long size = 0;
    int fd = -1;
    int rc;

    if (m->args.log_path == NULL)
        return mon_fail(m, EINVAL, "the monitor has no log path");
    if ((rc = open_log(m, m->args.log_path, 0, &fd, &size)) < 0)
        return rc;
    mon_close(&m->log.fd);
    m->log.fd = fd;
    m->log.size = size;
    m->log.last_errno = 0;
    return 0;
}

void mon_log_close(struct monitor *m)
{
    mon_close(&m->log.fd);
}

/* --log-max-size: start over with an empty file at the same path. */
static void rotate(struct monitor *m)
{
    char tmp[4096];
    long long size = 0;
    int fd = -1;
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", m->args.log_path);

    if (n < 0 || (size_t)n >= sizeof(tmp) || open_log(m, tmp, O_TRUNC, &fd, &size) < 0) {
        mon_warn(m, "cannot start a new log file: %s", m->errmsg);
        return;
    }
    if (rename(tmp, m->args.log_path) < 0) {
        mon_warn(m, "rename %s to %s: %s", tmp, m->args.log_path, strerror(errno));
        close(fd);
        (void)unlink(tmp);
        return;
    }
    mon_close(&m->log.fd);
    m->log.fd = fd;
    m->log.size = 0;
}

/* "YYYY-MM-DDTHH:MM:SS.nnnnnnnnn+hh:mm" (or ...Z) in local time; returns its length. */
static size_t timestamp(struct monitor *m, char *out, size_t size)
{
    struct timespec ts;
    int n;

    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != m->log.ts_sec) {
        struct tm tm;
        long off, abs_off;

        localtime_r(&ts.tv_sec, &tm);
        strftime(m->log.ts_base, sizeof(m->log.ts_base), "%Y-%m-%dT%H:%M:%S.", &tm);
        off = tm.tm_gmtoff / 60; /* minutes east of UTC */
        abs_off = off < 0 ? -off : off;
        if (off == 0)
            snprintf(m->log.ts_zone, sizeof(m->log.ts_zone), "Z");
        else
            snprintf(m->log.ts_zone, sizeof(m->log.ts_zone), "%c%02d:%02d", off < 0 ? '-' : '+',
                     (int)(abs_off / 60 % 100), (int)(abs_off % 60));
        m->log.ts_sec = ts.tv_sec;
    }
    n = snprintf(out, size, "%s%09ld%s", m->log.ts_base, ts.tv_nsec, m->log.ts_zone);
    return n < 0 ? 0 : (size_t)n;
}

static void report(struct monitor *m, int errnum)
{
    if (errnum != m->log.last_errno)
        mon_warn(m, "write log %s: %s (output dropped until writes succeed)", m->args.log_path,
                 strerror(errnum));
    m->log.last_errno = errnum;
}

/* writev all of iov[0..n) (total bytes); a short write is continued, an error drops the rest. */
static void flush(struct monitor *m, struct iovec *iov, int n, size_t total)
{
    if (m->args.log_max_size > 0 && m->log.size > 0 &&
        m->log.size + (long long)total > m->args.log_max_size)
        rotate(m);
    while (n > 0 && m->log.fd >= 0) {
        ssize_t w = writev(m->log.fd, iov, n);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            report(m, errno);
            return;
        }
        if (w == 0) {
            report(m, EIO);
            return;
        }
        m->log.size += w;
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    if (m->log.last_errno != 0) {
        mon_warn(m, "write log %s: working again", m->args.log_path);
        m->log.last_errno = 0;
    }
}

void mon_log_write(struct monitor *m, enum mon_stream s, const char *data, size_t len)
{
    static const char newline[] = "\n";
    char full[80], part[80];
    struct iovec iov[MON_LOG_IOV];
    size_t ts_len, prefix_len, total = 0;
    const char *stream = s == STREAM_STDERR ? "stderr" : "stdout";
    int n = 0;

    if (m->log.fd < 0 || len == 0)
        return;
    ts_len = timestamp(m, full, sizeof(full));
    prefix_len = ts_len + (size_t)snprintf(full + ts_len, sizeof(full) - ts_len, " %s F ", stream);
    memcpy(part, full, prefix_len + 1);
    part[prefix_len - 2] = 'P';
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t piece = nl ? (size_t)(nl - data) + 1 : len;

        iov[n++] = (struct iovec){.iov_base = nl ? full : part, .iov_len = prefix_len};
        iov[n++] = (struct iovec){.iov_base = (void *)data, .iov_len = piece};
        total += prefix_len + piece;
        if (!nl) {
            iov[n++] = (struct iovec){.iov_base = (void *)newline, .iov_len = 1};
            total++;
        }
        data += piece;
        len -= piece;
        if (n > MON_LOG_IOV - 3) {
            flush(m, iov, n, total);
            n = 0;
            total = 0;
        }
    }
    if (n > 0)
        flush(m, iov, n, total);
}
