/* exit.c: reaping children and writing the exit file.
 *
 * The monitor is a child subreaper: the container process, and any orphan re-parented to it,
 * is its child.  Every SIGCHLD reaps all that exited.  The exit file is written atomically:
 * `.<name>.tmp` in the same directory, fsync, rename over <name>, fsync of the directory:
 *   {"exit_code": N, "signal": S, "finished_ns": T, "oom_killed": B}
 * where exit_code is 128 + S for a death by signal S (what Kubernetes expects).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "monitor.h"

static void container_exited(struct monitor *m, int status)
{
    m->container_status = status;
    m->finished_ns = mon_now_ns(CLOCK_REALTIME);
    if (m->phase == PHASE_RUNNING) {
        m->phase = PHASE_DRAINING;
        m->drain_deadline_ms = mon_now_ns(CLOCK_MONOTONIC) / 1000000 + MON_DRAIN_MS;
    }
}

static void remember_early(struct monitor *m, pid_t pid, int status)
{
    if (m->n_early == MON_EARLY_MAX) { /* keep the newest */
        memmove(m->early, m->early + 1, sizeof(m->early[0]) * (MON_EARLY_MAX - 1));
        m->n_early--;
    }
    m->early[m->n_early++] = (struct mon_early){.pid = pid, .status = status};
}

/* The container pid is now known: it may already have been reaped. */
void mon_container_known(struct monitor *m)
{
    for (int i = 0; i < m->n_early; i++) {
        if (m->early[i].pid == m->container_pid) {
            container_exited(m, m->early[i].status);
            break;
        }
    }
    m->n_early = 0;
}

void mon_reap(struct monitor *m)
{
    for (;;) {
        int status = 0;
        pid_t pid = waitpid(-1, &status, WNOHANG);

        if (pid < 0 && errno == EINTR)
            continue;
        if (pid <= 0)
            return; /* 0: none exited now; -1 ECHILD: no children */
        if (pid == m->runtime_pid) {
            m->runtime_pid = 0;
            mon_on_runtime_exit(m, status);
            if (m->phase == PHASE_DONE)
                return;
        } else if (m->container_pid > 0 && pid == m->container_pid) {
            container_exited(m, status);
        } else if (m->container_pid == 0) {
            remember_early(m, pid, status);
        }
        /* else: an orphan re-parented to us, reaped and forgotten */
    }
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc;

    if (fd < 0)
        return -errno;
    rc = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

int mon_write_exit_file(struct monitor *m)
{
    const char *path = m->args.exit_file;
    const char *slash = strrchr(path, '/');
    char dir[4096], tmp[4096], text[160];
    int status = m->container_status;
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    int code = sig ? 128 + sig : WEXITSTATUS(status);
    int n, fd, rc;

    n = snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if (n < 0 || (size_t)n >= sizeof(dir) ||
        snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", slash == path ? "" : dir, slash + 1) >=
            (int)sizeof(tmp)) {
        mon_warn(m, "exit file path %s is too long", path);
        return -ENAMETOOLONG;
    }
    n = snprintf(text, sizeof(text),
                 "{\"exit_code\": %d, \"signal\": %d, \"finished_ns\": %lld, \"oom_killed\": %s}\n",
                 code, sig, (long long)m->finished_ns, mon_oom_killed(m) ? "true" : "false");
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        rc = -errno;
        mon_warn(m, "open %s: %s", tmp, strerror(errno));
        return rc;
    }
    if ((rc = mon_write_all(fd, text, (size_t)n)) < 0 || (fsync(fd) < 0 && (rc = -errno) < 0)) {
        mon_warn(m, "write %s: %s", tmp, strerror(-rc));
        close(fd);
        (void)unlink(tmp);
        return rc;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        rc = -errno;
        mon_warn(m, "rename %s to %s: %s", tmp, path, strerror(errno));
        (void)unlink(tmp);
        return rc;
    }
    if ((rc = fsync_dir(dir)) < 0)
        mon_warn(m, "fsync %s: %s", dir, strerror(-rc));
    return 0;
}
