/* stdio.c: the container's stdio: pipes (stdout, stderr, and stdin with --stdin) or, with
 * --terminal, the pty master that the runtime sends over the console socket (SCM_RIGHTS).
 * Each read of output goes to the log, then to the attach clients (attach.c).
 * A pty's output is logged as "stdout"; reading a master whose slave is gone gives EIO (EOF). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "monitor.h"

static int set_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

static int make_pipe(struct monitor *m, int *rd, int *wr, bool nonblock_read)
{
    int p[2];

    if (pipe2(p, O_CLOEXEC) < 0)
        return mon_fail(m, errno, "pipe: %s", strerror(errno));
    *rd = p[0];
    *wr = p[1];
    if (nonblock_read)
        (void)set_nonblock(p[0]);
    return 0;
}

static int console_listen(struct monitor *m)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int n =
        snprintf(m->io.console_path, sizeof(m->io.console_path), "%s.console", m->args.ctl_socket);
    mode_t old;
    int fd;

    if (n < 0 || (size_t)n >= sizeof(addr.sun_path))
        return mon_fail(m, ENAMETOOLONG, "console socket path %s.console is too long",
                        m->args.ctl_socket);
    memcpy(addr.sun_path, m->io.console_path, (size_t)n + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return mon_fail(m, errno, "socket: %s", strerror(errno));
    (void)unlink(m->io.console_path);
    old = umask(077);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 1) < 0) {
        int saved = errno;

        umask(old);
        close(fd);
        m->io.console_path[0] = '\0';
        return mon_fail(m, saved, "console socket %s.console: %s", m->args.ctl_socket,
                        strerror(saved));
    }
    umask(old);
    m->io.console_listen = fd;
    return 0;
}

int mon_stdio_setup(struct monitor *m)
{
    struct mon_stdio *io = &m->io;
    int rc;

    if (!m->args.terminal) {
        for (int s = 0; s < STREAM_COUNT; s++) {
            if ((rc = make_pipe(m, &io->out[s], &io->child[1 + s], true)) < 0)
                return rc;
            io->eof[s] = false;
        }
        if (m->args.stdin_open) {
            if ((rc = make_pipe(m, &io->child[0], &io->stdin_w, false)) < 0)
                return rc;
            (void)set_nonblock(io->stdin_w);
        }
    } else {
        if ((rc = console_listen(m)) < 0 ||
            (rc = make_pipe(m, &io->runtime_out, &io->child[1], true)) < 0)
            return rc;
    }
    if (io->child[0] < 0) {
        io->child[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (io->child[0] < 0)
            return mon_fail(m, errno, "open /dev/null: %s", strerror(errno));
    }
    return 0;
}

/* The runtime holds the container's ends now: drop ours, so EOF means the container is gone. */
void mon_stdio_after_spawn(struct monitor *m)
{
    for (int i = 0; i < 3; i++)
        mon_close(&m->io.child[i]);
    for (int s = 0; s < STREAM_COUNT; s++) {
        if (m->io.out[s] >= 0 && mon_epoll_add(m, m->io.out[s], TAG_STDIO, (uint32_t)s) < 0)
            mon_warn(m, "%s", m->errmsg);
    }
    if (m->io.runtime_out >= 0 && mon_epoll_add(m, m->io.runtime_out, TAG_RUNTIME_OUT, 0) < 0)
        mon_warn(m, "%s", m->errmsg);
}

/* With --terminal, after create: accept the runtime's connection and take the pty master. */
int mon_stdio_receive_console(struct monitor *m)
{
    char name[256];
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = name, .iov_len = sizeof(name)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    struct cmsghdr *cmsg;
    int conn, master = -1;
    ssize_t n;

    conn = accept4(m->io.console_listen, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0)
        return mon_fail(m, errno, "the runtime did not connect to the console socket %s: %s",
                        m->io.console_path, strerror(errno));
    memset(&control, 0, sizeof(control));
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof(control.buf);
    do {
        n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    close(conn);
    for (cmsg = n >= 0 ? CMSG_FIRSTHDR(&msg) : NULL; cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
        if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS &&
            cmsg->cmsg_len == CMSG_LEN(sizeof(int)))
            memcpy(&master, CMSG_DATA(cmsg), sizeof(int));
    }
    mon_close(&m->io.console_listen);
    (void)unlink(m->io.console_path);
    m->io.console_path[0] = '\0';
    if (master < 0)
        return mon_fail(m, EPROTO, "the runtime sent no pty master on the console socket");
    (void)set_nonblock(master);
    m->io.out[STREAM_STDOUT] = master;
    m->io.eof[STREAM_STDOUT] = false;
    if (m->args.stdin_open) {
        /* A descriptor of its own, so that it has its own epoll registration (EPOLLOUT). */
        m->io.stdin_w = fcntl(master, F_DUPFD_CLOEXEC, 3);
        if (m->io.stdin_w < 0)
            return mon_fail(m, errno, "dup of the pty master: %s", strerror(errno));
    }
    return mon_epoll_add(m, master, TAG_STDIO, STREAM_STDOUT);
}

static void keep_runtime_output(struct monitor *m, const char *data, size_t len)
{
    if (len >= sizeof(m->errbuf)) {
        data += len - sizeof(m->errbuf);
        len = sizeof(m->errbuf);
    }
    if (m->errlen + len > sizeof(m->errbuf)) { /* keep the last bytes: the error comes last */
        size_t drop = m->errlen + len - sizeof(m->errbuf);

        memmove(m->errbuf, m->errbuf + drop, m->errlen - drop);
        m->errlen -= drop;
    }
    memcpy(m->errbuf + m->errlen, data, len);
    m->errlen += len;
}

/* Read what the runtime wrote on fd (non-blocking) into m->errbuf. */
void mon_stdio_capture_runtime(struct monitor *m, int fd)
{
    for (;;) {
        ssize_t n;

        if (fd < 0)
            return;
        n = read(fd, m->buf, sizeof(m->buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        keep_runtime_output(m, m->buf, (size_t)n);
    }
}

static void stream_eof(struct monitor *m, enum mon_stream s)
{
    mon_epoll_del(m, m->io.out[s]);
    mon_close(&m->io.out[s]);
    m->io.eof[s] = true;
}

void mon_stdio_on_readable(struct monitor *m, enum mon_stream s)
{
    ssize_t n;

    if (s >= STREAM_COUNT || m->io.out[s] < 0)
        return;
    do {
        n = read(m->io.out[s], m->buf, sizeof(m->buf));
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        if (m->phase == PHASE_CREATING) {
            keep_runtime_output(m, m->buf, (size_t)n);
        } else {
            mon_log_write(m, s, m->buf, (size_t)n);
            mon_attach_output(m, s, m->buf, (size_t)n);
        }
        return;
    }
    if (n < 0 && errno == EAGAIN)
        return;
    if (n < 0 && errno != EIO) /* EIO: a pty whose slave side is closed, i.e. EOF */
        mon_warn(m, "reading container %s: %s", s == STREAM_STDOUT ? "stdout" : "stderr",
                 strerror(errno));
    stream_eof(m, s);
}

int mon_stdio_resize(struct monitor *m, unsigned rows, unsigned cols)
{
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};

    if (!m->args.terminal)
        return mon_fail(m, ENOTTY, "the container has no terminal");
    if (m->io.out[STREAM_STDOUT] < 0)
        return mon_fail(m, ENOTTY,
                        "the container's terminal is not open (not created yet, or gone)");
    if (rows > 0xffff || cols > 0xffff)
        return mon_fail(m, EINVAL, "size %ux%u out of range", rows, cols);
    if (ioctl(m->io.out[STREAM_STDOUT], TIOCSWINSZ, &ws) < 0)
        return mon_fail(m, errno, "TIOCSWINSZ: %s", strerror(errno));
    return 0;
}

bool mon_stdio_all_eof(const struct monitor *m)
{
    for (int s = 0; s < STREAM_COUNT; s++) {
        if (!m->io.eof[s])
            return false;
    }
    return true;
}

void mon_stdio_close(struct monitor *m)
{
    for (int s = 0; s < STREAM_COUNT; s++) {
        if (m->io.out[s] >= 0)
            stream_eof(m, s);
    }
    for (int i = 0; i < 3; i++)
        mon_close(&m->io.child[i]);
    mon_close(&m->io.stdin_w);
    mon_close(&m->io.runtime_out);
    mon_close(&m->io.console_listen);
    if (m->io.console_path[0] != '\0')
        (void)unlink(m->io.console_path);
}
