/* ctl.c: the control socket (--ctl-socket): unix SOCK_SEQPACKET, one command per message, one
 * reply per command ("ok" or "error <message>").  Commands:
 *   reopen              reopen the log file at its path (the kubelet renamed it away)
 *   resize ROWS COLS    set the pty's window size (--terminal only)
 * Up to MON_MAX_CTL clients at once; the socket file is removed when the monitor exits. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "monitor.h"

#define CTL_MSG_MAX 256

int mon_ctl_listen(struct monitor *m)
{
    int rc = mon_listen_unix(m, m->args.ctl_socket, SOCK_SEQPACKET, 8, &m->ctl.listen_fd);

    if (rc < 0)
        return rc;
    m->ctl.bound = true;
    return mon_epoll_add(m, m->ctl.listen_fd, TAG_CTL_LISTEN, 0);
}

static void reply(int fd, const char *text)
{
    (void)send(fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void drop(struct monitor *m, uint32_t index)
{
    mon_epoll_del(m, m->ctl.conns[index]);
    mon_close(&m->ctl.conns[index]);
}

void mon_ctl_on_accept(struct monitor *m)
{
    for (;;) {
        int fd = accept4(m->ctl.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        uint32_t slot;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN, or out of descriptors: the client waits or times out */
        }
        for (slot = 0; slot < MON_MAX_CTL && m->ctl.conns[slot] >= 0; slot++)
            ;
        if (slot == MON_MAX_CTL) {
            reply(fd, "error too many control connections");
            close(fd);
            continue;
        }
        m->ctl.conns[slot] = fd;
        if (mon_epoll_add(m, fd, TAG_CTL_CONN, slot) < 0) {
            mon_warn(m, "%s", m->errmsg);
            mon_close(&m->ctl.conns[slot]);
        }
    }
}

static int parse_uint(const char *s, char **end, unsigned *out)
{
    unsigned long v;

    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    v = strtoul(s, end, 10);
    if (errno != 0 || v > 0xffff)
        return -EINVAL;
    *out = (unsigned)v;
    return 0;
}

static void handle(struct monitor *m, int fd, char *cmd)
{
    char answer[CTL_MSG_MAX + MON_ERRMSG];
    unsigned rows = 0, cols = 0;
    char *end = NULL;
    int rc;

    if (strcmp(cmd, "reopen") == 0) {
        rc = mon_log_reopen(m);
    } else if (strncmp(cmd, "resize ", 7) == 0) {
        if (parse_uint(cmd + 7, &end, &rows) < 0 || *end != ' ' ||
            parse_uint(end + 1, &end, &cols) < 0 || *end != '\0')
            rc = mon_fail(m, EINVAL, "usage: resize ROWS COLS (0-65535)");
        else
            rc = mon_stdio_resize(m, rows, cols);
    } else {
        rc = mon_fail(m, EINVAL, "unknown command '%.64s'", cmd);
    }
    if (rc == 0) {
        reply(fd, "ok");
        return;
    }
    snprintf(answer, sizeof(answer), "error %s", m->errmsg);
    reply(fd, answer);
}

void mon_ctl_on_message(struct monitor *m, uint32_t index)
{
    char cmd[CTL_MSG_MAX];
    ssize_t n;
    int fd;

    if (index >= MON_MAX_CTL || (fd = m->ctl.conns[index]) < 0)
        return;
    do {
        n = recv(fd, cmd, sizeof(cmd) - 1, MSG_TRUNC | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n <= 0) { /* 0: the client closed; <0: a broken connection */
        drop(m, index);
        return;
    }
    if ((size_t)n >= sizeof(cmd)) {
        reply(fd, "error command too long");
        return;
    }
    while (n > 0 && (cmd[n - 1] == '\n' || cmd[n - 1] == '\r'))
        n--;
    cmd[n] = '\0';
    handle(m, fd, cmd);
}

void mon_ctl_close(struct monitor *m)
{
    for (uint32_t i = 0; i < MON_MAX_CTL; i++)
        drop(m, i);
    mon_epoll_del(m, m->ctl.listen_fd);
    mon_close(&m->ctl.listen_fd);
    if (m->ctl.bound)
        (void)unlink(m->args.ctl_socket);
    m->ctl.bound = false;
}
