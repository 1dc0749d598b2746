/* oom.c: OOM kills in the container's memory cgroup (--cgroup-oom-dir).
 *
 * Registered after create (the runtime makes the cgroup) and before the sync message (the
 * daemon starts the container after it).  The verdict at exit is "the cgroup's oom_kill counter
 * grew while the container lived": `oom_kill N` of memory.oom_control (cgroup v1) or of
 * memory.events (v2).  On v1 an eventfd is also registered through cgroup.event_control; it is
 * the verdict when the counter cannot be read any more (the cgroup was removed).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "monitor.h"

/* "oom_kill N" in a flat-keyed cgroup file; -1 when absent or unreadable. */
static long long read_counter(int fd)
{
    char text[1024];
    const char *p;

    if (fd < 0 || mon_read_small(fd, text, sizeof(text)) <= 0)
        return -1;
    p = text;
    while (p != NULL && *p) {
        if (strncmp(p, "oom_kill ", 9) == 0)
            return strtoll(p + 9, NULL, 10);
        p = strchr(p, '\n');
        if (p != NULL)
            p++;
    }
    return -1;
}

static int register_v1_event(struct monitor *m, const char *dir)
{
    char path[4096], line[64];
    int ctl, n, rc;

    if (mon_path_join(path, sizeof(path), dir, "cgroup.event_control") < 0)
        return -ENAMETOOLONG;
    m->oom.event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m->oom.event_fd < 0)
        return -errno;
    ctl = open(path, O_WRONLY | O_CLOEXEC);
    if (ctl < 0)
        return -errno;
    n = snprintf(line, sizeof(line), "%d %d", m->oom.event_fd, m->oom.counter_fd);
    rc = mon_write_all(ctl, line, (size_t)n);
    close(ctl);
    if (rc < 0)
        return rc;
    return mon_epoll_add(m, m->oom.event_fd, TAG_OOM, 0);
}

void mon_oom_register(struct monitor *m)
{
    const char *dir = m->args.cgroup_oom_dir;
    char path[4096];
    int rc;

    if (dir == NULL)
        return;
    if (mon_path_join(path, sizeof(path), dir, "memory.oom_control") == 0 &&
        (m->oom.counter_fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
        if ((rc = register_v1_event(m, dir)) < 0) {
            mon_warn(m, "cannot register for OOM events in %s: %s (the counter is still read)", dir,
                     strerror(-rc));
            mon_close(&m->oom.event_fd);
        }
    } else if (mon_path_join(path, sizeof(path), dir, "memory.events") == 0) {
        m->oom.counter_fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (m->oom.counter_fd < 0) {
        mon_warn(m, "no memory.oom_control or memory.events in %s: OOM kills will not be reported",
                 dir);
        return;
    }
    m->oom.base = read_counter(m->oom.counter_fd);
}

void mon_oom_on_event(struct monitor *m)
{
    uint64_t count = 0;

    if (m->oom.event_fd >= 0 && read(m->oom.event_fd, &count, sizeof(count)) == sizeof(count) &&
        count > 0)
        m->oom.fired = true;
}

bool mon_oom_killed(struct monitor *m)
{
    long long now = read_counter(m->oom.counter_fd);

    mon_oom_on_event(m);
    if (now >= 0 && m->oom.base >= 0)
        return now > m->oom.base;
    return m->oom.fired;
}

void mon_oom_close(struct monitor *m)
{
    mon_epoll_del(m, m->oom.event_fd);
    mon_close(&m->oom.event_fd);
    mon_close(&m->oom.counter_fd);
}
