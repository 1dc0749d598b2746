/* main.c: pycrio-monitor's flags, detaching from the daemon, setup and teardown.
 *
 * The daemon fork+execs this program with a pipe as --sync-fd.  The first process forks, writes
 * {"monitor_pid": N} and exits; the second (the monitor) waits for its go-ahead, calls setsid()
 * and becomes a child subreaper, so the container process (re-parented to it when the runtime's
 * create exits) is its child.  Protocol and flags: docs/monitor.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "monitor.h"

#define MON_VERSION "pycrio-monitor 1"

enum {
    OPT_ID = 256,
    OPT_RUNTIME,
    OPT_RUNTIME_ROOT,
    OPT_RUNTIME_ARG,
    OPT_BUNDLE,
    OPT_PID_FILE,
    OPT_LOG_PATH,
    OPT_EXIT_FILE,
    OPT_CTL_SOCKET,
    OPT_SYNC_FD,
    OPT_TERMINAL,
    OPT_STDIN,
    OPT_STDIN_ONCE,
    OPT_OOM_DIR,
    OPT_LOG_MAX,
    OPT_VERSION,
    OPT_HELP,
};

static const struct option options[] = {
    {"id", required_argument, NULL, OPT_ID},
    {"runtime", required_argument, NULL, OPT_RUNTIME},
    {"runtime-root", required_argument, NULL, OPT_RUNTIME_ROOT},
    {"runtime-arg", required_argument, NULL, OPT_RUNTIME_ARG},
    {"bundle", required_argument, NULL, OPT_BUNDLE},
    {"pid-file", required_argument, NULL, OPT_PID_FILE},
    {"log-path", required_argument, NULL, OPT_LOG_PATH},
    {"exit-file", required_argument, NULL, OPT_EXIT_FILE},
    {"ctl-socket", required_argument, NULL, OPT_CTL_SOCKET},
    {"sync-fd", required_argument, NULL, OPT_SYNC_FD},
    {"terminal", no_argument, NULL, OPT_TERMINAL},
    {"stdin", no_argument, NULL, OPT_STDIN},
    {"stdin-once", no_argument, NULL, OPT_STDIN_ONCE},
    {"cgroup-oom-dir", required_argument, NULL, OPT_OOM_DIR},
    {"log-max-size", required_argument, NULL, OPT_LOG_MAX},
    {"version", no_argument, NULL, OPT_VERSION},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static const char usage[] =
    "usage: pycrio-monitor --id ID --runtime PATH --runtime-root DIR [--runtime-arg ARG]...\n"
    "         --bundle DIR --pid-file FILE --exit-file FILE --ctl-socket PATH --sync-fd N\n"
    "         [--log-path FILE] [--log-max-size BYTES] [--terminal] [--stdin [--stdin-once]]\n"
    "         [--cgroup-oom-dir DIR]\n"
    "See docs/monitor.md.\n";

static void init_context(struct monitor *m)
{
    memset(m, 0, sizeof(*m));
    m->args.sync_fd = -1;
    m->epfd = m->sigfd = -1;
    m->log.fd = -1;
    m->log.ts_sec = -1;
    for (int i = 0; i < STREAM_COUNT; i++) {
        m->io.out[i] = -1;
        m->io.eof[i] = true;
    }
    m->io.stdin_w = m->io.runtime_out = m->io.console_listen = -1;
    m->io.child[0] = m->io.child[1] = m->io.child[2] = -1;
    m->ctl.listen_fd = -1;
    for (int i = 0; i < MON_MAX_CTL; i++)
        m->ctl.conns[i] = -1;
    m->attach.listen_fd = -1;
    for (int i = 0; i < MON_MAX_ATTACH; i++)
        m->attach.conns[i].fd = -1;
    m->oom.event_fd = m->oom.counter_fd = -1;
    m->self = getpid();
    m->rc = 1;
}

static int parse_number(const char *s, long long min, long long *out)
{
    char *end = NULL;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min)
        return -EINVAL;
    *out = v;
    return 0;
}

static int need_absolute(struct monitor *m, const char *flag, const char *value)
{
    if (value == NULL)
        return mon_fail(m, EINVAL, "%s is required", flag);
    if (value[0] != '/')
        return mon_fail(m, EINVAL, "%s must be an absolute path, not '%s'", flag, value);
    return 0;
}

static int validate(struct monitor *m)
{
    struct mon_args *a = &m->args;
    int rc;

    if (a->id == NULL || a->id[0] == '\0' || strchr(a->id, '/') != NULL || a->id[0] == '.')
        return mon_fail(m, EINVAL, "--id must be a non-empty name without '/'");
    if (a->runtime == NULL || a->runtime[0] == '\0')
        return mon_fail(m, EINVAL, "--runtime is required");
    if (a->sync_fd < 3)
        return mon_fail(m, EINVAL, "--sync-fd must be an open descriptor >= 3");
    if ((rc = need_absolute(m, "--runtime-root", a->runtime_root)) < 0 ||
        (rc = need_absolute(m, "--bundle", a->bundle)) < 0 ||
        (rc = need_absolute(m, "--pid-file", a->pid_file)) < 0 ||
        (rc = need_absolute(m, "--exit-file", a->exit_file)) < 0 ||
        (rc = need_absolute(m, "--ctl-socket", a->ctl_socket)) < 0)
        return rc;
    /* The ctl, attach and (--terminal) console sockets: PATH, PATH.attach, PATH.console. */
    if (strlen(a->ctl_socket) + strlen(a->terminal ? ".console" : ".attach") >= MON_SUN_PATH)
        return mon_fail(m, EINVAL, "--ctl-socket %s is too long: %s must fit in %d bytes",
                        a->ctl_socket, a->terminal ? "PATH.console" : "PATH.attach",
                        MON_SUN_PATH - 1);
    if (a->stdin_once && !a->stdin_open)
        return mon_fail(m, EINVAL, "--stdin-once needs --stdin");
    if (a->log_path != NULL && (rc = need_absolute(m, "--log-path", a->log_path)) < 0)
        return rc;
    if (a->cgroup_oom_dir != NULL &&
        (rc = need_absolute(m, "--cgroup-oom-dir", a->cgroup_oom_dir)) < 0)
        return rc;
    return 0;
}

/* 0: run; 1: --version/--help printed; -EINVAL: bad flags (m->errmsg says why). */
static int parse_args(struct monitor *m, int argc, char **argv)
{
    struct mon_args *a = &m->args;
    long long n;
    int opt;

    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case OPT_ID:
            a->id = optarg;
            break;
        case OPT_RUNTIME:
            a->runtime = optarg;
            break;
        case OPT_RUNTIME_ROOT:
            a->runtime_root = optarg;
            break;
        case OPT_RUNTIME_ARG:
            if (a->n_runtime_args == MON_MAX_RUNTIME_ARGS)
                return mon_fail(m, EINVAL, "more than %d --runtime-arg", MON_MAX_RUNTIME_ARGS);
            a->runtime_args[a->n_runtime_args++] = optarg;
            break;
        case OPT_BUNDLE:
            a->bundle = optarg;
            break;
        case OPT_PID_FILE:
            a->pid_file = optarg;
            break;
        case OPT_LOG_PATH:
            a->log_path = optarg[0] ? optarg : NULL;
            break;
        case OPT_EXIT_FILE:
            a->exit_file = optarg;
            break;
        case OPT_CTL_SOCKET:
            a->ctl_socket = optarg;
            break;
        case OPT_SYNC_FD:
            if (parse_number(optarg, 0, &n) < 0 || n > 1 << 20)
                return mon_fail(m, EINVAL, "bad --sync-fd '%s'", optarg);
            a->sync_fd = (int)n;
            break;
        case OPT_TERMINAL:
            a->terminal = true;
            break;
        case OPT_STDIN:
            a->stdin_open = true;
            break;
        case OPT_STDIN_ONCE:
            a->stdin_once = true;
            break;
        case OPT_OOM_DIR:
            a->cgroup_oom_dir = optarg[0] ? optarg : NULL;
            break;
        case OPT_LOG_MAX:
            if (parse_number(optarg, 0, &n) < 0)
                return mon_fail(m, EINVAL, "bad --log-max-size '%s'", optarg);
            a->log_max_size = n;
            break;
        case OPT_VERSION:
            puts(MON_VERSION);
            return 1;
        case OPT_HELP:
            fputs(usage, stdout);
            return 1;
        default:
            return mon_fail(m, EINVAL, "unknown or incomplete flag '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return mon_fail(m, EINVAL, "unexpected argument '%s'", argv[optind]);
    return validate(m);
}

/* Keep 0, 1, 2 and the sync fd; close every other inherited descriptor. */
static int prepare_fds(struct monitor *m)
{
    int sync_fd = m->args.sync_fd;
    int null_fd;

    if (fcntl(sync_fd, F_SETFD, FD_CLOEXEC) < 0)
        return mon_fail(m, errno, "--sync-fd %d: %s", sync_fd, strerror(errno));
    if (sync_fd > 3)
        (void)close_range(3, (unsigned)sync_fd - 1, 0);
    (void)close_range((unsigned)sync_fd + 1, ~0U, 0);
    /* stdin is never the daemon's; stdout/stderr stay (the daemon's choice) unless closed. */
    null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0)
        return mon_fail(m, errno, "open /dev/null: %s", strerror(errno));
    for (int fd = 0; fd <= 2; fd++) {
        if (fd == 0 || fcntl(fd, F_GETFD) < 0)
            dup2(null_fd, fd);
    }
    if (null_fd > 2)
        close(null_fd);
    return 0;
}

/* Only the monitor returns: the first process reports the monitor's pid and exits.  The monitor
 * goes on only once that report is written (a "g" on the gate pipe): a first process killed
 * before it could report leaves no monitor behind that the daemon would not know of. */
static int detach(struct monitor *m)
{
    int gate[2];
    pid_t pid;
    char c = 0;
    ssize_t n;

    if (pipe2(gate, O_CLOEXEC) < 0)
        return mon_fail(m, errno, "pipe: %s", strerror(errno));
    pid = fork();
    if (pid < 0)
        return mon_fail(m, errno, "fork: %s", strerror(errno));
    if (pid > 0) {
        close(gate[0]);
        if (mon_sync_monitor_pid(m->args.sync_fd, pid) == 0)
            (void)mon_write_all(gate[1], "g", 1);
        _exit(0); /* closes gate[1] */
    }
    close(gate[1]);
    do {
        n = read(gate[0], &c, 1);
    } while (n < 0 && errno == EINTR);
    close(gate[0]);
    if (n != 1 || c != 'g')
        _exit(1); /* the first process could not tell the daemon about us: do nothing */
    m->self = getpid();
    if (setsid() < 0)
        return mon_fail(m, errno, "setsid: %s", strerror(errno));
    return 0;
}

static int setup_signals(struct monitor *m)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return mon_fail(m, errno, "sigprocmask: %s", strerror(errno));
    m->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (m->sigfd < 0)
        return mon_fail(m, errno, "signalfd: %s", strerror(errno));
    m->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (m->epfd < 0)
        return mon_fail(m, errno, "epoll_create1: %s", strerror(errno));
    return mon_epoll_add(m, m->sigfd, TAG_SIGNAL, 0);
}

static int setup(struct monitor *m)
{
    int rc;

    umask(027);
    if (chdir("/") < 0)
        return mon_fail(m, errno, "chdir /: %s", strerror(errno));
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
        return mon_fail(m, errno, "prctl(PR_SET_CHILD_SUBREAPER): %s", strerror(errno));
    if ((rc = setup_signals(m)) < 0 || (rc = mon_log_open(m)) < 0 || (rc = mon_ctl_listen(m)) < 0 ||
        (rc = mon_attach_listen(m)) < 0 || (rc = mon_stdio_setup(m)) < 0 ||
        (rc = mon_spawn_runtime(m)) < 0)
        return rc;
    mon_stdio_after_spawn(m);
    return 0;
}

static void teardown(struct monitor *m)
{
    mon_ctl_close(m);
    mon_attach_close(m);
    mon_stdio_close(m);
    mon_log_close(m);
    mon_oom_close(m);
    mon_close(&m->epfd);
    mon_close(&m->sigfd);
    mon_close(&m->args.sync_fd);
}

int main(int argc, char **argv)
{
    struct monitor m;
    int rc;

    init_context(&m);
    signal(SIGPIPE, SIG_IGN);
    rc = parse_args(&m, argc, argv);
    if (rc > 0)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "pycrio-monitor: %s\n%s", m.errmsg, usage);
        if (m.args.sync_fd >= 3 && fcntl(m.args.sync_fd, F_GETFD) >= 0)
            mon_sync_error(&m, "monitor", 2, m.errmsg, strlen(m.errmsg));
        return 2;
    }
    if (prepare_fds(&m) < 0 || detach(&m) < 0 || setup(&m) < 0) {
        mon_sync_error(&m, "monitor", 1, m.errmsg, strlen(m.errmsg));
        if (m.runtime_pid > 0)
            kill(m.runtime_pid, SIGKILL);
        mon_kill_children(&m);
        teardown(&m);
        return 1;
    }
    rc = mon_loop(&m);
    teardown(&m);
    return rc;
}
