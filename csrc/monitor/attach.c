/* attach.c: the attach socket (<ctl-socket>.attach): unix SOCK_STREAM, up to MON_MAX_ATTACH
 * clients, each receiving the container's output from the moment it connects and, with --stdin,
 * feeding the container's stdin.  Both directions are frames: a 5-byte header (type, then the
 * payload length as a big-endian uint32) and the payload.  docs/monitor.md, "Attach".
 *
 * Monitor to client: HELLO first ("pycrio-attach 1 stdin=0|1 tty=0|1"), then STDOUT / STDERR
 * frames (one per read of container output), ERROR before a refusal or a protocol error, and EOF
 * once the container has exited and its output is drained.  Output is sent non-blocking: a
 * client whose socket buffer cannot take a whole frame is disconnected (it never sees output with
 * a hole in it), so neither the container nor the log ever waits for a client.
 *
 * Client to monitor: STDIN (data for the container's stdin) and CLOSE_STDIN.  Input goes through
 * one buffer (in[]); while the container's stdin cannot take it, no client is read (the kernel's
 * socket buffers hold the rest: backpressure), and stdin_w waits in epoll for EPOLLOUT.  Client
 * sockets are edge-triggered, so each keeps a `readable` flag until it has been read to EAGAIN.
 * With --stdin-once the first input session that ends closes the container's stdin (a pipe is
 * closed; a pty gets its VEOF character, since its master is also the output).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "monitor.h"

#define FRAME_HEADER 5
#define FRAME_STDIN_MAX (64 * 1024)

enum { OUT_HELLO = 0, OUT_STDOUT = 1, OUT_STDERR = 2, OUT_ERROR = 3 };
enum { IN_STDIN = 1, IN_CLOSE_STDIN = 2 };

static void put_header(uint8_t *h, uint8_t type, uint32_t len)
{
    h[0] = type;
    h[1] = (uint8_t)(len >> 24);
    h[2] = (uint8_t)(len >> 16);
    h[3] = (uint8_t)(len >> 8);
    h[4] = (uint8_t)len;
}

/* One whole frame, non-blocking: 0, -EAGAIN when the socket could not take all of it (a part
 * may have gone), or -errno (the client is gone: EPIPE, ECONNRESET). */
static int send_frame(int fd, uint8_t type, const void *data, size_t len)
{
    uint8_t h[FRAME_HEADER];
    struct iovec iov[2] = {{.iov_base = h, .iov_len = sizeof(h)},
                           {.iov_base = (void *)data, .iov_len = len}};
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = len > 0 ? 2 : 1};
    ssize_t n;

    put_header(h, type, (uint32_t)len);
    do {
        n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    return n == (ssize_t)(sizeof(h) + len) ? 0 : -EAGAIN;
}

static void send_text(int fd, uint8_t type, const char *text)
{
    (void)send_frame(fd, type, text, strlen(text));
}

static bool stdin_accepts(const struct monitor *m)
{
    return m->args.stdin_open && !m->attach.stdin_done;
}

int mon_attach_listen(struct monitor *m)
{
    struct mon_attach *a = &m->attach;
    int n = snprintf(a->path, sizeof(a->path), "%s.attach", m->args.ctl_socket);
    int rc;

    if (n < 0 || (size_t)n >= sizeof(a->path))
        return mon_fail(m, ENAMETOOLONG, "attach socket path %s.attach is too long",
                        m->args.ctl_socket);
    rc = mon_listen_unix(m, a->path, SOCK_STREAM, 4 * MON_MAX_ATTACH, &a->listen_fd);
    if (rc < 0)
        return rc;
    a->bound = true;
    return mon_epoll_add(m, a->listen_fd, TAG_ATTACH_LISTEN, 0);
}

static void poll_stdin(struct monitor *m, bool on)
{
    struct mon_attach *a = &m->attach;

    if (on == a->stdin_polled || m->io.stdin_w < 0)
        return;
    if (!on) {
        mon_epoll_del(m, m->io.stdin_w);
        a->stdin_polled = false;
    } else if (mon_epoll_add_events(m, m->io.stdin_w, EPOLLOUT, TAG_STDIN, 0) == 0) {
        a->stdin_polled = true;
    } else {
        mon_warn(m, "%s", m->errmsg);
    }
}

/* Close the container's stdin: the pipe's write end, or (pty) write VEOF in canonical mode. */
static void close_stdin(struct monitor *m)
{
    struct mon_attach *a = &m->attach;
    struct termios t;

    poll_stdin(m, false);
    if (m->args.terminal && m->io.stdin_w >= 0 && tcgetattr(m->io.stdin_w, &t) == 0 &&
        (t.c_lflag & ICANON)) {
        char eof = (char)t.c_cc[VEOF];

        (void)mon_write_all(m->io.stdin_w, &eof, 1);
    }
    mon_close(&m->io.stdin_w);
    a->stdin_done = true;
    a->stdin_closing = false;
    a->in_len = a->in_off = 0;
}

/* Write in[] to the container's stdin; true when it is empty (written, or discarded). */
static bool flush_stdin(struct monitor *m)
{
    struct mon_attach *a = &m->attach;

    while (a->in_off < a->in_len && !a->stdin_done) {
        ssize_t n;

        if (m->io.stdin_w < 0)
            return false; /* --terminal before create sent the pty: kept until it does */
        n = write(m->io.stdin_w, a->in + a->in_off, a->in_len - a->in_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            poll_stdin(m, true);
            return false;
        }
        if (n < 0) {
            if (errno != EPIPE && errno != EIO)
                mon_warn(m, "writing the container's stdin: %s (stdin closed)", strerror(errno));
            close_stdin(m);
            break;
        }
        a->in_off += (size_t)n;
    }
    a->in_len = a->in_off = 0;
    poll_stdin(m, false);
    if (a->stdin_closing)
        close_stdin(m);
    return true;
}

/* A client's input ended (close-stdin, EOF, disconnect): with --stdin-once, stdin closes once
 * what is buffered is written.  The caller flushes. */
static void input_end(struct monitor *m, struct mon_attach_conn *c)
{
    if (c->input && !c->input_ended && m->args.stdin_once && stdin_accepts(m))
        m->attach.stdin_closing = true;
    c->input_ended = true;
}

static void drop(struct monitor *m, uint32_t index, const char *why)
{
    struct mon_attach_conn *c = &m->attach.conns[index];

    if (c->fd < 0)
        return;
    if (why != NULL)
        send_text(c->fd, OUT_ERROR, why);
    mon_epoll_del(m, c->fd);
    mon_close(&c->fd);
    input_end(m, c);
    if (m->attach.stdin_closing)
        (void)flush_stdin(m);
}

void mon_attach_on_accept(struct monitor *m)
{
    struct mon_attach *a = &m->attach;
    char hello[64];

    snprintf(hello, sizeof(hello), "pycrio-attach 1 stdin=%d tty=%d", stdin_accepts(m) ? 1 : 0,
             m->args.terminal ? 1 : 0);
    for (;;) {
        int fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        int sndbuf = MON_ATTACH_SNDBUF;
        uint32_t slot;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN, or out of descriptors: the client waits or times out */
        }
        for (slot = 0; slot < MON_MAX_ATTACH && a->conns[slot].fd >= 0; slot++)
            ;
        if (slot == MON_MAX_ATTACH) {
            send_text(fd, OUT_ERROR, "too many attach connections");
            close(fd);
            continue;
        }
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        a->conns[slot] = (struct mon_attach_conn){.fd = fd};
        if (send_frame(fd, OUT_HELLO, hello, strlen(hello)) < 0 ||
            mon_epoll_add_events(m, fd, EPOLLIN | EPOLLRDHUP | EPOLLET, TAG_ATTACH_CONN, slot) <
                0) {
            mon_close(&a->conns[slot].fd);
            continue;
        }
    }
}

/* Parse n bytes read into in[] as frames of client c, moving stdin payload to the front of in[]
 * (in_len).  NULL, or why the client is dropped. */
static const char *parse(struct monitor *m, struct mon_attach_conn *c, size_t n)
{
    struct mon_attach *a = &m->attach;
    size_t pos = 0, out = 0;
    const char *why = NULL;

    while (pos < n && why == NULL) {
        uint32_t len;

        if (c->remaining > 0) {
            size_t take = n - pos < c->remaining ? n - pos : c->remaining;

            if (stdin_accepts(m)) {
                memmove(a->in + out, a->in + pos, take);
                out += take;
            }
            pos += take;
            c->remaining -= (uint32_t)take;
            continue;
        }
        c->hdr[c->hdr_len++] = (uint8_t)a->in[pos++];
        if (c->hdr_len < FRAME_HEADER)
            continue;
        c->hdr_len = 0;
        len = (uint32_t)c->hdr[1] << 24 | (uint32_t)c->hdr[2] << 16 | (uint32_t)c->hdr[3] << 8 |
              c->hdr[4];
        if (c->hdr[0] == IN_STDIN) {
            if (!m->args.stdin_open)
                why = "the container has no stdin";
            else if (c->input_ended)
                why = "stdin data after close-stdin";
            else if (len > FRAME_STDIN_MAX)
                why = "stdin frame longer than 65536 bytes";
            c->input = true;
            c->remaining = why ? 0 : len;
        } else if (c->hdr[0] == IN_CLOSE_STDIN && len == 0) {
            c->input = true;
            input_end(m, c);
        } else {
            why = "bad frame";
        }
    }
    a->in_len = out;
    a->in_off = 0;
    return why;
}

/* Read client `index` until EAGAIN, EOF, or the container's stdin is full. */
static void service(struct monitor *m, uint32_t index)
{
    struct mon_attach *a = &m->attach;
    struct mon_attach_conn *c = &a->conns[index];

    while (c->fd >= 0 && c->readable) {
        const char *why;
        ssize_t n;

        if (a->in_len > 0 && !flush_stdin(m))
            return; /* resumed by mon_attach_on_stdin_writable */
        n = read(c->fd, a->in, sizeof(a->in));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            c->readable = false;
            return;
        }
        if (n <= 0) { /* EOF: its input ended; it may still read output (shutdown SHUT_WR) */
            c->readable = false;
            if (n < 0 || c->hup) {
                drop(m, index, NULL);
                return;
            }
            input_end(m, c);
            (void)flush_stdin(m);
            return;
        }
        why = parse(m, c, (size_t)n);
        (void)flush_stdin(m);
        if (why != NULL) {
            drop(m, index, why);
            return;
        }
    }
}

void mon_attach_on_event(struct monitor *m, uint32_t index, uint32_t events)
{
    struct mon_attach_conn *c;

    if (index >= MON_MAX_ATTACH || (c = &m->attach.conns[index])->fd < 0)
        return;
    if (events & EPOLLERR) {
        drop(m, index, NULL);
        return;
    }
    if (events & EPOLLHUP)
        c->hup = true;
    c->readable = true;
    service(m, index);
}

static void resume(struct monitor *m)
{
    for (uint32_t i = 0; i < MON_MAX_ATTACH && m->attach.in_len == 0; i++)
        service(m, i);
}

void mon_attach_on_stdin_writable(struct monitor *m)
{
    if (flush_stdin(m))
        resume(m);
}

/* --terminal: the pty master has arrived, so input kept until now can go. */
void mon_attach_stdin_ready(struct monitor *m)
{
    if (flush_stdin(m))
        resume(m);
}

void mon_attach_output(struct monitor *m, enum mon_stream s, const char *data, size_t len)
{
    uint8_t type = s == STREAM_STDERR ? OUT_STDERR : OUT_STDOUT;

    for (uint32_t i = 0; i < MON_MAX_ATTACH; i++) {
        int fd = m->attach.conns[i].fd;
        int rc;

        if (fd < 0 || (rc = send_frame(fd, type, data, len)) == 0)
            continue;
        if (rc == -EAGAIN)
            mon_warn(m, "attach client %u cannot keep up with the output: disconnected", i);
        drop(m, i, NULL);
    }
}

void mon_attach_close(struct monitor *m)
{
    struct mon_attach *a = &m->attach;

    for (uint32_t i = 0; i < MON_MAX_ATTACH; i++) {
        if (a->conns[i].fd >= 0) {
            mon_epoll_del(m, a->conns[i].fd);
            mon_close(&a->conns[i].fd);
        }
    }
    mon_epoll_del(m, a->listen_fd);
    mon_close(&a->listen_fd);
    if (a->bound)
        (void)unlink(a->path);
    a->bound = false;
}
