/* loop.c: pycrio-monitor's event loop: epoll over the signalfd, container stdio, the runtime's
 * output, the control and attach sockets, the container's stdin (when attach input waits for
 * it) and the OOM eventfd, until the exit file is written. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "monitor.h"

int mon_epoll_add(struct monitor *m, int fd, enum mon_tag tag, uint32_t index)
{
    return mon_epoll_add_events(m, fd, EPOLLIN, tag, index);
}

int mon_epoll_add_events(struct monitor *m, int fd, uint32_t events, enum mon_tag tag,
                         uint32_t index)
{
    struct epoll_event ev = {.events = events};

    ev.data.u64 = ((uint64_t)tag << 32) | index;
    if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return mon_fail(m, errno, "epoll_ctl(ADD, %d): %s", fd, strerror(errno));
    return 0;
}

void mon_epoll_del(struct monitor *m, int fd)
{
    if (fd >= 0 && m->epfd >= 0)
        (void)epoll_ctl(m->epfd, EPOLL_CTL_DEL, fd, NULL);
}

static void on_terminate(struct monitor *m, int sig)
{
    if (m->phase == PHASE_CREATING && m->runtime_pid > 0) {
        mon_warn(m, "signal %d while the runtime creates the container: stopping it", sig);
        m->interrupted = true;
        kill(m->runtime_pid, SIGKILL);
    } else if (m->phase == PHASE_RUNNING && m->container_pid > 0) {
        mon_warn(m, "signal %d: forwarding it to the container (pid %d)", sig,
                 (int)m->container_pid);
        kill(m->container_pid, sig);
    }
}

static void on_signals(struct monitor *m)
{
    struct signalfd_siginfo si;

    for (;;) {
        ssize_t n = read(m->sigfd, &si, sizeof(si));

        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(si))
            return; /* EAGAIN: all read */
        if (si.ssi_signo == SIGCHLD)
            mon_reap(m);
        else if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
            on_terminate(m, (int)si.ssi_signo);
        /* SIGHUP: ignored (no controlling terminal to lose). */
    }
}

static void dispatch(struct monitor *m, uint64_t data, uint32_t events)
{
    enum mon_tag tag = (enum mon_tag)(data >> 32);
    uint32_t index = (uint32_t)data;

    switch (tag) {
    case TAG_SIGNAL:
        on_signals(m);
        break;
    case TAG_STDIO:
        mon_stdio_on_readable(m, (enum mon_stream)index);
        break;
    case TAG_RUNTIME_OUT:
        mon_stdio_capture_runtime(m, m->io.runtime_out);
        break;
    case TAG_CTL_LISTEN:
        mon_ctl_on_accept(m);
        break;
    case TAG_CTL_CONN:
        mon_ctl_on_message(m, index);
        break;
    case TAG_OOM:
        mon_oom_on_event(m);
        break;
    case TAG_ATTACH_LISTEN:
        mon_attach_on_accept(m);
        break;
    case TAG_ATTACH_CONN:
        mon_attach_on_event(m, index, events);
        break;
    case TAG_STDIN:
        mon_attach_on_stdin_writable(m);
        break;
    }
}

static int64_t now_ms(void)
{
    return mon_now_ns(CLOCK_MONOTONIC) / 1000000;
}

/* Runs until the container's exit is recorded (exit file written) or create failed; m->rc. */
int mon_loop(struct monitor *m)
{
    struct epoll_event events[16];

    while (m->phase != PHASE_DONE) {
        int timeout = -1;
        int n;

        if (m->phase == PHASE_DRAINING) {
            int64_t left = m->drain_deadline_ms - now_ms();

            if (mon_stdio_all_eof(m) || left <= 0) {
                if (!mon_stdio_all_eof(m))
                    mon_warn(m, "container output still open %d ms after its exit: not waiting",
                             MON_DRAIN_MS);
                mon_ctl_close(m);    /* once the exit file exists, nobody can talk to us */
                mon_attach_close(m); /* attach clients: EOF after all the output */
                m->rc = mon_write_exit_file(m) < 0 ? 1 : 0;
                m->phase = PHASE_DONE;
                break;
            }
            timeout = (int)left;
        }
        n = epoll_wait(m->epfd, events, (int)(sizeof(events) / sizeof(events[0])), timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            mon_warn(m, "epoll_wait: %s", strerror(errno));
            return 1;
        }
        for (int i = 0; i < n && m->phase != PHASE_DONE; i++)
            dispatch(m, events[i].data.u64, events[i].events);
    }
    return m->rc;
}
