/* spawn.c: running `<runtime> create` with the container's stdio and handling its exit.
 *
 * While create runs, the container process exists but waits for `runtime start` (the daemon's
 * job), so whatever arrives on the container's stdout/stderr then is the runtime's own output:
 * it is kept in m->errbuf for the sync error.  With --terminal the runtime's output has its own
 * pipe and the pty master arrives on the console socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "monitor.h"

extern char **environ;

int mon_spawn_runtime(struct monitor *m)
{
    const struct mon_args *a = &m->args;
    const char *argv[MON_MAX_RUNTIME_ARGS + 16];
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, defaults;
    int n = 0;
    int rc;
    pid_t pid;

    argv[n++] = a->runtime;
    argv[n++] = "--root";
    argv[n++] = a->runtime_root;
    for (int i = 0; i < a->n_runtime_args; i++)
        argv[n++] = a->runtime_args[i];
    argv[n++] = "create";
    argv[n++] = "--bundle";
    argv[n++] = a->bundle;
    argv[n++] = "--pid-file";
    argv[n++] = a->pid_file;
    if (a->terminal) {
        argv[n++] = "--console-socket";
        argv[n++] = m->io.console_path;
    }
    argv[n++] = a->id;
    argv[n] = NULL;

    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGCHLD);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGHUP);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, m->io.child[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, m->io.child[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, m->io.child[2] >= 0 ? m->io.child[2] : m->io.child[1],
                                     STDERR_FILENO);
    rc = posix_spawnp(&pid, a->runtime, &fa, &attr, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0)
        return mon_fail(m, rc, "cannot run the runtime %s: %s", a->runtime, strerror(rc));
    m->runtime_pid = pid;
    return 0;
}

/* SIGKILL every remaining child (a runtime init left behind) and reap them for up to 1 s. */
void mon_kill_children(struct monitor *m)
{
    char path[64];
    char list[1024];
    int fd;
    ssize_t n;

    snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)m->self, (int)m->self);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    n = mon_read_small(fd, list, sizeof(list));
    close(fd);
    for (char *p = list; n > 0 && *p;) {
        char *end = NULL;
        long pid = strtol(p, &end, 10);

        if (end == p)
            break;
        if (pid > 0)
            kill((pid_t)pid, SIGKILL);
        p = end;
    }
    for (int i = 0; i < 100; i++) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);

        if (pid < 0 && errno == EINTR)
            continue;
        if (pid < 0)
            return; /* ECHILD: none left */
        if (pid == 0) {
            struct timespec ts = {0, 10 * 1000 * 1000};

            nanosleep(&ts, NULL);
        }
    }
}

static int read_pid_file(struct monitor *m, pid_t *pid)
{
    char text[32];
    char *end = NULL;
    long v;
    ssize_t n;
    int fd = open(m->args.pid_file, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return mon_fail(m, errno, "runtime create succeeded but the pid file %s cannot be read: %s",
                        m->args.pid_file, strerror(errno));
    n = mon_read_small(fd, text, sizeof(text));
    close(fd);
    v = n > 0 ? strtol(text, &end, 10) : 0;
    if (v <= 0 || end == text || (*end != '\0' && *end != '\n'))
        return mon_fail(m, EINVAL, "the pid file %s holds no pid ('%.20s')", m->args.pid_file,
                        n > 0 ? text : "");
    *pid = (pid_t)v;
    return 0;
}

static void create_failed(struct monitor *m, const char *stage, int code, const char *msg,
                          size_t len)
{
    mon_sync_error(m, stage, code, msg, len);
    mon_kill_children(m);
    m->phase = PHASE_DONE;
    m->rc = 1;
}

/* Called from mon_reap when the runtime's create has exited with wait status `status`. */
void mon_on_runtime_exit(struct monitor *m, int status)
{
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    pid_t pid = 0;

    if (m->args.terminal) {
        mon_stdio_capture_runtime(m, m->io.runtime_out);
        mon_epoll_del(m, m->io.runtime_out);
        mon_close(&m->io.runtime_out);
    } else {
        mon_stdio_capture_runtime(m, m->io.out[STREAM_STDOUT]);
        mon_stdio_capture_runtime(m, m->io.out[STREAM_STDERR]);
    }
    if (code != 0 || m->interrupted) {
        if (m->interrupted) {
            const char note[] = "\n(pycrio-monitor: create interrupted by a signal)";
            size_t k = sizeof(note) - 1;

            if (m->errlen + k > sizeof(m->errbuf))
                m->errlen = sizeof(m->errbuf) - k;
            memcpy(m->errbuf + m->errlen, note, k);
            m->errlen += k;
        }
        create_failed(m, "runtime", code ? code : 1, m->errbuf, m->errlen);
        return;
    }
    if (m->errlen > 0)
        mon_warn(m, "runtime create said: %.*s", (int)m->errlen, m->errbuf);
    m->errlen = 0;
    if (read_pid_file(m, &pid) < 0 || (m->args.terminal && mon_stdio_receive_console(m) < 0)) {
        create_failed(m, "monitor", -1, m->errmsg, strlen(m->errmsg));
        return;
    }
    if (m->args.terminal)
        mon_attach_stdin_ready(m); /* attach input that came before the pty */
    mon_oom_register(m); /* before the sync message: the daemon starts the container after it */
    m->container_pid = pid;
    m->phase = PHASE_RUNNING;
    mon_sync_pid(m, pid);
    mon_container_known(m);
}
