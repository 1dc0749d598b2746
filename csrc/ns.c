/* ns.c: pycrio_ns_pin and pycrio_ns_unpin; the namespace dance is drawn in include/ns.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/sched.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal/cleanup.h"
#include "internal/err_set.h"
#include "internal/fdio.h"
#include "include/ns.h"

#define KNOWN_KINDS (PYCRIO_NS_NET | PYCRIO_NS_IPC | PYCRIO_NS_UTS)
#define MAX_SYSCTLS 1024
#define SYSCTL_KEY_MAX 200
#define SYSCTL_PREFIX "/proc/sys/"
#define NKINDS 3
#define UNPIN_MAX_STACK 64 /* stacked mounts a single unpin detaches at most */
#define CHILD_STACK_SIZE (64 * 1024)
#ifndef __SANITIZE_ADDRESS__
/* The child shares the daemon's memory and this thread sleeps until it exits, as with
 * posix_spawn: no copy of the daemon's page tables (a fork cost ~1 ms per 20 MiB of RSS). */
#define CHILD_CLONE_FLAGS (CLONE_VM | CLONE_VFORK | SIGCHLD)
#else
/* ASan's interceptors keep process-wide state a memory-sharing child would change. */
#define CHILD_CLONE_FLAGS (SIGCHLD)
#endif

struct ns_kind {
    int kind;       /* PYCRIO_NS_* */
    int clone_flag; /* CLONE_NEW* */
    const char *name;
};

static const struct ns_kind KINDS[NKINDS] = {
    {PYCRIO_NS_NET, CLONE_NEWNET, "net"},
    {PYCRIO_NS_IPC, CLONE_NEWIPC, "ipc"},
    {PYCRIO_NS_UTS, CLONE_NEWUTS, "uts"},
};

/* What the child did last; CHILD_OK means every step succeeded. */
enum child_step {
    CHILD_OK = 0,
    CHILD_UNSHARE,
    CHILD_SETHOSTNAME,
    CHILD_LO_SOCKET,
    CHILD_LO_GETFLAGS,
    CHILD_LO_SETFLAGS,
    CHILD_SYSCTL_OPEN,
    CHILD_SYSCTL_WRITE,
    CHILD_PIN_OPEN,
    CHILD_PIN_MOUNT,
};

/* The fixed-size record the child sends (one SOCK_SEQPACKET message). */
struct child_report {
    int step;   /* enum child_step */
    int errnum; /* errno of the failing step, 0 on success */
    int index;  /* the sysctl's index for CHILD_SYSCTL_*, the kind's for CHILD_PIN_*, else -1 */
    int pinned; /* bit i: KINDS[i] was pinned (also on failure: the parent unpins them) */
};

struct sysctl_entry {
    const char *key; /* points into the caller's "key=value" */
    size_t key_len;
    const char *value;
    size_t value_len;
    char path[sizeof(SYSCTL_PREFIX) + SYSCTL_KEY_MAX]; /* /proc/sys/a/b/c */
};

/* Everything the child needs, prepared before the clone so that it allocates nothing. */
struct plan {
    int unshare_flags;
    const char *hostname; /* NULL: leave it */
    size_t hostname_len;
    struct sysctl_entry *sysctls; /* heap, nsysctls entries */
    size_t nsysctls;
    struct ifreq lo; /* ifr_name "lo", for SIOCGIFFLAGS/SIOCSIFFLAGS */
    int bring_lo_up;
    int kinds;        /* PYCRIO_NS_* to pin */
    int dirfd;        /* the pin directory */
    int sock;         /* the child's end of the socketpair */
    pid_t parent_pid; /* to notice a parent gone before PR_SET_PDEATHSIG took effect */
    int pinned;       /* the child's progress, for its report */
};

static void plan_free(struct plan *p)
{
    free(p->sysctls);
    p->sysctls = NULL;
}

#define cleanup_plan __attribute__((cleanup(plan_free)))

/* ---- before the clone: validation ------------------------------------------------------- */

static int key_has_prefix(const char *key, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);

    return len >= n && memcmp(key, prefix, n) == 0;
}

static int key_is(const char *key, size_t len, const char *word)
{
    return len == strlen(word) && memcmp(key, word, len) == 0;
}

/* The namespace (PYCRIO_NS_*) a sysctl key belongs to, or 0 when it is not namespaced. */
static int sysctl_kind(const char *key, size_t len)
{
    if (key_has_prefix(key, len, "net."))
        return PYCRIO_NS_NET;
    if (key_has_prefix(key, len, "kernel.shm") || key_has_prefix(key, len, "kernel.msg") ||
        key_has_prefix(key, len, "kernel.sem") || key_has_prefix(key, len, "fs.mqueue."))
        return PYCRIO_NS_IPC;
    if (key_is(key, len, "kernel.domainname") || key_is(key, len, "kernel.hostname"))
        return PYCRIO_NS_UTS;
    return 0;
}

static const char *kind_name(int kind)
{
    for (int i = 0; i < NKINDS; i++)
        if (KINDS[i].kind == kind)
            return KINDS[i].name;
    return "?";
}

static int sysctl_parse(struct sysctl_entry *e, const char *spec, int kinds, struct pycrio_err *err)
{
    const char *eq = strchr(spec, '=');
    int kind;

    if (eq == NULL)
        return pycrio_err_set(err, EINVAL, "sysctl", "", "sysctl '%s' is not key=value", spec);
    e->key = spec;
    e->key_len = (size_t)(eq - spec);
    e->value = eq + 1;
    e->value_len = strlen(e->value);
    if (e->key_len == 0 || e->key_len > SYSCTL_KEY_MAX)
        return pycrio_err_set(err, EINVAL, "sysctl", "",
                              "sysctl key of '%s' is empty or longer than %d", spec,
                              SYSCTL_KEY_MAX);
    if (memmem(e->key, e->key_len, "..", 2) != NULL)
        return pycrio_err_set(err, EINVAL, "sysctl", "", "sysctl key '%.*s' contains '..'",
                              (int)e->key_len, e->key);
    if (memchr(e->key, '/', e->key_len) != NULL)
        return pycrio_err_set(err, EINVAL, "sysctl", "", "sysctl key '%.*s' contains '/'",
                              (int)e->key_len, e->key);
    for (size_t i = 0; i < e->key_len; i++) {
        char ch = e->key[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' ||
              ch == '-'))
            return pycrio_err_set(err, EINVAL, "sysctl", "",
                                  "sysctl key '%.*s' has a character outside [a-z0-9_.-]",
                                  (int)e->key_len, e->key);
    }
    if (e->key[0] == '.' || e->key[e->key_len - 1] == '.')
        return pycrio_err_set(err, EINVAL, "sysctl", "",
                              "sysctl key '%.*s' starts or ends with '.'", (int)e->key_len, e->key);
    if (e->value_len == 0 || memchr(e->value, '\n', e->value_len) != NULL)
        return pycrio_err_set(err, EINVAL, "sysctl", "",
                              "sysctl '%.*s': the value is empty or has a newline", (int)e->key_len,
                              e->key);
    kind = sysctl_kind(e->key, e->key_len);
    if (kind == 0)
        return pycrio_err_set(err, EINVAL, "sysctl", "",
                              "sysctl '%.*s' is not namespaced: setting it would change the host",
                              (int)e->key_len, e->key);
    if (!(kinds & kind))
        return pycrio_err_set(err, EINVAL, "sysctl", "",
                              "sysctl '%.*s' needs a new %s namespace, which was not asked for",
                              (int)e->key_len, e->key, kind_name(kind));
    memcpy(e->path, SYSCTL_PREFIX, strlen(SYSCTL_PREFIX));
    for (size_t i = 0; i < e->key_len; i++)
        e->path[strlen(SYSCTL_PREFIX) + i] = e->key[i] == '.' ? '/' : e->key[i];
    e->path[strlen(SYSCTL_PREFIX) + e->key_len] = '\0';
    return 0;
}

static int plan_build(struct plan *p, int kinds, const char *hostname, const char *const *sysctls,
                      struct pycrio_err *err)
{
    size_t n = 0;

    if (kinds == 0 || (kinds & ~KNOWN_KINDS) != 0)
        return pycrio_err_set(err, EINVAL, "ns_pin", "", "invalid namespace kinds 0x%x", kinds);
    for (int i = 0; i < NKINDS; i++)
        if (kinds & KINDS[i].kind)
            p->unshare_flags |= KINDS[i].clone_flag;
    if (hostname != NULL && hostname[0] != '\0') {
        p->hostname_len = strlen(hostname);
        if (!(kinds & PYCRIO_NS_UTS))
            return pycrio_err_set(err, EINVAL, "sethostname", "",
                                  "a hostname needs a new uts namespace, which was not asked for");
        if (p->hostname_len > HOST_NAME_MAX)
            return pycrio_err_set(err, EINVAL, "sethostname", "",
                                  "hostname '%s' is longer than %d bytes", hostname, HOST_NAME_MAX);
        p->hostname = hostname;
    }
    while (sysctls != NULL && sysctls[n] != NULL)
        n++;
    if (n > MAX_SYSCTLS)
        return pycrio_err_set(err, E2BIG, "sysctl", "", "%zu sysctls, at most %d", n, MAX_SYSCTLS);
    if (n > 0) {
        p->sysctls = calloc(n, sizeof(*p->sysctls));
        if (p->sysctls == NULL)
            return pycrio_err_set(err, ENOMEM, "sysctl", "", "out of memory for %zu sysctls", n);
    }
    for (size_t i = 0; i < n; i++) {
        int rc = sysctl_parse(&p->sysctls[i], sysctls[i], kinds, err);

        if (rc < 0)
            return rc;
    }
    p->nsysctls = n;
    p->bring_lo_up = (kinds & PYCRIO_NS_NET) != 0;
    p->kinds = kinds;
    memset(&p->lo, 0, sizeof(p->lo));
    memcpy(p->lo.ifr_name, "lo", 3);
    return 0;
}

/* ---- in the child: async-signal-safe only, no allocation -------------------------------- */

static __attribute__((noreturn)) void child_exit(const struct plan *p, int step, int errnum,
                                                 int index)
{
    struct child_report r = {.step = step, .errnum = errnum, .index = index, .pinned = p->pinned};

    while (send(p->sock, &r, sizeof(r), MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
    _exit(step == CHILD_OK ? 0 : 1);
}

/* "/proc/self/fd/<fd>" into buf (at least 32 bytes), without the stdio of a forked child. */
static void fd_path(char *buf, int fd)
{
    static const char prefix[] = "/proc/self/fd/";
    char digits[12];
    int n = 0;

    do
        digits[n++] = (char)('0' + fd % 10);
    while ((fd /= 10) > 0 && n < (int)sizeof(digits));
    memcpy(buf, prefix, sizeof(prefix) - 1);
    buf += sizeof(prefix) - 1;
    while (n > 0)
        *buf++ = digits[--n];
    *buf = '\0';
}

/* Create <dir>/<name> (O_EXCL, 0444) and bind-mount this child's /proc/self/ns/<name> onto
 * exactly that file (through its descriptor).  The step that failed, or CHILD_OK. */
static int child_pin(const struct plan *p, const struct ns_kind *k)
{
    char source[32] = "/proc/self/ns/", target[32];
    int fd, saved;

    memcpy(source + strlen(source), k->name, strlen(k->name) + 1);
    fd = openat(p->dirfd, k->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444);
    if (fd < 0)
        return CHILD_PIN_OPEN;
    fd_path(target, fd);
    if (fchmod(fd, 0444) == 0 && mount(source, target, NULL, MS_BIND, NULL) == 0) {
        close(fd);
        return CHILD_OK;
    }
    saved = errno;
    close(fd);
    unlinkat(p->dirfd, k->name, 0);
    errno = saved;
    return CHILD_PIN_MOUNT;
}

static int child_lo_up(const struct plan *p, int *step)
{
    struct ifreq ifr = p->lo;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int rc = -1;

    *step = CHILD_LO_SOCKET;
    if (s < 0)
        return -1;
    *step = CHILD_LO_GETFLAGS;
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP;
        *step = CHILD_LO_SETFLAGS;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    {
        int saved = errno;

        close(s);
        errno = saved;
    }
    return rc;
}

static __attribute__((noreturn)) void child_main(struct plan *p)
{
    int keep[2] = {p->sock, p->dirfd};
    int step;

    /* Drop every inherited descriptor but ours: the daemon's, and other pins' socketpairs. */
    pycrio_close_fds_except(keep, 2);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != p->parent_pid)
        _exit(1);
    if (unshare(p->unshare_flags) < 0)
        child_exit(p, CHILD_UNSHARE, errno, -1);
    if (p->hostname != NULL && sethostname(p->hostname, p->hostname_len) < 0)
        child_exit(p, CHILD_SETHOSTNAME, errno, -1);
    if (p->bring_lo_up && child_lo_up(p, &step) < 0)
        child_exit(p, step, errno, -1);
    for (size_t i = 0; i < p->nsysctls; i++) {
        const struct sysctl_entry *e = &p->sysctls[i];
        int fd = open(e->path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);

        if (fd < 0)
            child_exit(p, CHILD_SYSCTL_OPEN, errno, (int)i);
        if (pycrio_write_all(fd, e->value, e->value_len) < 0)
            child_exit(p, CHILD_SYSCTL_WRITE, errno, (int)i);
        close(fd);
    }
    /* The child pins its own namespaces: its parent sleeps until it exits (CLONE_VFORK). */
    for (int i = 0; i < NKINDS; i++) {
        if (!(p->kinds & KINDS[i].kind))
            continue;
        step = child_pin(p, &KINDS[i]);
        if (step != CHILD_OK)
            child_exit(p, step, errno, i);
        p->pinned |=
            1 << i; /* its own copy of the plan under fork, the shared one under CLONE_VM */
    }
    child_exit(p, CHILD_OK, 0, -1);
}

static int child_entry(void *arg)
{
    child_main(arg);
}

/* ---- back in the parent ----------------------------------------------------------------- */

/* Reap pid, retrying on EINTR; ECHILD (someone else reaped it) counts as reaped. */
static int reap(pid_t pid, int *status)
{
    *status = 0;
    for (;;) {
        if (waitpid(pid, status, 0) == pid)
            return 0;
        if (errno == EINTR)
            continue;
        return errno == ECHILD ? 0 : -errno;
    }
}

static int report_child_failure(const struct plan *p, const struct child_report *r, const char *dir,
                                struct pycrio_err *err)
{
    int e = r->errnum > 0 ? r->errnum : EIO;

    switch (r->step) {
    case CHILD_UNSHARE:
        return pycrio_err_set(err, e, "unshare", dir, "unshare(0x%x) for pins in %s: %s",
                              (unsigned)p->unshare_flags, dir, strerror(e));
    case CHILD_SETHOSTNAME:
        return pycrio_err_set(err, e, "sethostname", dir,
                              "sethostname '%s' in the new uts namespace (pins in %s): %s",
                              p->hostname, dir, strerror(e));
    case CHILD_LO_SOCKET:
    case CHILD_LO_GETFLAGS:
    case CHILD_LO_SETFLAGS:
        return pycrio_err_set(err, e, "ioctl", dir,
                              "bringing lo up in the new net namespace (pins in %s): %s: %s", dir,
                              r->step == CHILD_LO_SOCKET     ? "socket"
                              : r->step == CHILD_LO_GETFLAGS ? "ioctl(SIOCGIFFLAGS)"
                                                             : "ioctl(SIOCSIFFLAGS)",
                              strerror(e));
    case CHILD_SYSCTL_OPEN:
    case CHILD_SYSCTL_WRITE:
        if (r->index >= 0 && (size_t)r->index < p->nsysctls) {
            const struct sysctl_entry *s = &p->sysctls[r->index];

            return pycrio_err_set(
                err, e, "sysctl", s->path, "sysctl %.*s: %s %s: %s", (int)s->key_len, s->key,
                r->step == CHILD_SYSCTL_OPEN ? "open" : "write", s->path, strerror(e));
        }
        break;
    case CHILD_PIN_OPEN:
    case CHILD_PIN_MOUNT:
        if (r->index >= 0 && r->index < NKINDS) {
            const char *name = KINDS[r->index].name;
            char path[PATH_MAX];

            snprintf(path, sizeof(path), "%s/%s", dir, name);
            if (r->step == CHILD_PIN_OPEN)
                return pycrio_err_set(err, e, "open", path, "creating the pin file %s: %s", path,
                                      strerror(e));
            return pycrio_err_set(err, e, "mount", path,
                                  "bind-mounting /proc/<child>/ns/%s onto %s: %s", name, path,
                                  strerror(e));
        }
        break;
    default:
        break;
    }
    return pycrio_err_set(err, e, "clone", dir, "namespace child failed at step %d: %s", r->step,
                          strerror(e));
}

/* umount2(MNT_DETACH) every mount stacked on path, then unlink it.  1 removed, 0 none. */
static int unpin_path(const char *path, struct pycrio_err *err)
{
    int removed = 0;

    for (int i = 0; i < UNPIN_MAX_STACK; i++) {
        if (umount2(path, MNT_DETACH | UMOUNT_NOFOLLOW) == 0) {
            removed = 1;
            continue;
        }
        if (errno == EINVAL || errno == ENOENT)
            break;
        return pycrio_err_set(err, errno, "umount2", path, "umount2 %s: %s", path, strerror(errno));
    }
    if (unlink(path) == 0)
        removed = 1;
    else if (errno != ENOENT)
        return pycrio_err_set(err, errno, "unlink", path, "unlink %s: %s", path, strerror(errno));
    return removed;
}

int pycrio_ns_unpin(const char *path, struct pycrio_err *err)
{
    if (path == NULL || path[0] == '\0')
        return pycrio_err_set(err, EINVAL, "ns_unpin", "", "empty path");
    return unpin_path(path, err);
}

/* Unpin what was pinned after a failure; append a cleanup failure to err's message. */
static void unpin_all(char paths[][PATH_MAX], const int *pinned, struct pycrio_err *err)
{
    for (int i = 0; i < NKINDS; i++) {
        struct pycrio_err cleanup_err = {0};

        if (!pinned[i] || unpin_path(paths[i], &cleanup_err) >= 0)
            continue;
        if (err != NULL) {
            size_t len = strlen(err->msg);

            snprintf(err->msg + len, sizeof(err->msg) - len, "; cleanup failed too: %s",
                     cleanup_err.msg);
        }
    }
}

static int run_child(struct plan *p, pid_t *pid_out, struct pycrio_err *err)
{
    sigset_t all, old;
    char *stack;
    long pid;

    stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return pycrio_err_set(err, errno, "mmap", "", "mmap for the child's stack: %s",
                              strerror(errno));
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* clone(), not fork(): no atfork handlers of the daemon's libraries either. */
    pid = clone(child_entry, stack + CHILD_STACK_SIZE, CHILD_CLONE_FLAGS, p);
    {
        int saved = errno;

        pthread_sigmask(SIG_SETMASK, &old, NULL);
        munmap(stack, CHILD_STACK_SIZE);
        errno = saved;
    }
    if (pid < 0)
        return pycrio_err_set(err, errno, "clone", "", "clone: %s", strerror(errno));
    *pid_out = (pid_t)pid;
    return 0;
}

int pycrio_ns_pin(const char *dir, int kinds, const char *hostname, const char *const *sysctls,
                  struct pycrio_err *err)
{
    cleanup_plan struct plan p = {0};
    cleanup_close int dirfd = -1;
    cleanup_close int sock_parent = -1;
    struct child_report r = {.step = -1};
    char paths[NKINDS][PATH_MAX];
    int pinned[NKINDS] = {0};
    int sv[2], rc, status, npins = 0;
    pid_t pid = -1;
    ssize_t n;

    if (dir == NULL || dir[0] == '\0')
        return pycrio_err_set(err, EINVAL, "ns_pin", "", "empty directory");
    if ((rc = plan_build(&p, kinds, hostname, sysctls, err)) < 0)
        return rc;
    for (int i = 0; i < NKINDS; i++) {
        int len = snprintf(paths[i], sizeof(paths[i]), "%s/%s", dir, KINDS[i].name);

        if (len < 0 || (size_t)len >= sizeof(paths[i]))
            return pycrio_err_set(err, ENAMETOOLONG, "open", dir, "pin path %s/%s is too long", dir,
                                  KINDS[i].name);
    }
    dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return pycrio_err_set(err, errno, "open", dir, "pin directory %s: %s", dir,
                              strerror(errno));
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return pycrio_err_set(err, errno, "socketpair", "", "socketpair: %s", strerror(errno));
    sock_parent = sv[0];
    p.sock = sv[1];
    p.dirfd = dirfd;
    p.parent_pid = getpid();
    rc = run_child(&p, &pid, err);
    close(p.sock);
    if (rc < 0)
        return rc;

    do
        n = recv(sock_parent, &r, sizeof(r), 0);
    while (n < 0 && errno == EINTR);
    rc = reap(pid, &status);
    if (n != (ssize_t)sizeof(r))
        return pycrio_err_set(err, n < 0 ? errno : EIO, "clone", dir,
                              "namespace child for %s ended without a report (wait status 0x%x)",
                              dir, (unsigned)status);
    for (int i = 0; i < NKINDS; i++)
        if (r.pinned & (1 << i)) {
            pinned[i] = 1;
            npins++;
        }
    if (r.step != CHILD_OK)
        rc = report_child_failure(&p, &r, dir, err);
    else if (rc < 0)
        rc = pycrio_err_set(err, -rc, "waitpid", dir, "waitpid %d: %s", (int)pid, strerror(-rc));
    if (rc < 0) {
        unpin_all(paths, pinned, err);
        return rc;
    }
    return npins;
}
