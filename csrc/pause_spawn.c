/* pause_spawn.c: pycrio_pause_spawn; the process dance is drawn in include/pause_spawn.h. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal/cleanup.h"
#include "internal/err_set.h"
#include "internal/fdio.h"
#include "include/pause_spawn.h"

#define NNS 3
#define PAUSE_ARGV0 "/pause"
#define ROOT_MOUNTPOINT "/proc" /* exists everywhere; covered in the pause's own mount ns only */
#define ROOT_OPTIONS "mode=0555,size=4k,nr_inodes=4"
#define CAP_LAST_CAP_MAX 255
#define NGROUPS_LIMIT 65536          /* the kernel's NGROUPS_MAX */
#define NO_ID 0xffffffffu            /* (uid_t)-1: "no change" to setres*id(2), never an id */
#define CHILD_STACK_SIZE (64 * 1024) /* each child's; they call only plain syscalls */
/* Both children share the daemon's memory until the pause execs (see pause_spawn.h): no page
 * table copy of a daemon of tens of MiB, which cost ~1 ms per 15 MiB of RSS per fork. */
#ifndef __SANITIZE_ADDRESS__
#define CHILD_CLONE_FLAGS (CLONE_VM | CLONE_VFORK | SIGCHLD)
#else
/* ASan's interceptors (sigaction, ...) keep process-wide state that a child sharing the memory
 * would change under the parent: sanitized builds copy the memory, as fork does. */
#define CHILD_CLONE_FLAGS (SIGCHLD)
#endif

/* The step a child failed at (or STEP_PID: the intermediate's pid record). */
enum step {
    STEP_PID = 0,
    STEP_SETNS_NET,
    STEP_SETNS_IPC,
    STEP_SETNS_UTS,
    STEP_UNSHARE,
    STEP_CLONE,
    STEP_SETSID,
    STEP_DUP2,
    STEP_OOM_OPEN,
    STEP_OOM_WRITE,
    STEP_CGROUP_OPEN,
    STEP_CGROUP_WRITE,
    STEP_MOUNT_PRIVATE,
    STEP_MOUNT_TMPFS,
    STEP_PIVOT_ROOT,
    STEP_UMOUNT_OLD,
    STEP_CHDIR,
    STEP_NO_NEW_PRIVS,
    STEP_CAPBSET_DROP,
    STEP_SETGROUPS,
    STEP_SETRESGID,
    STEP_SETRESUID,
    STEP_CAPSET,
    STEP_EXEC,
};

static const char *const STEP_NAMES[] = {
    [STEP_PID] = "clone",
    [STEP_SETNS_NET] = "setns",
    [STEP_SETNS_IPC] = "setns",
    [STEP_SETNS_UTS] = "setns",
    [STEP_UNSHARE] = "unshare",
    [STEP_CLONE] = "clone",
    [STEP_SETSID] = "setsid",
    [STEP_DUP2] = "dup2",
    [STEP_OOM_OPEN] = "open",
    [STEP_OOM_WRITE] = "write",
    [STEP_CGROUP_OPEN] = "open",
    [STEP_CGROUP_WRITE] = "write",
    [STEP_MOUNT_PRIVATE] = "mount",
    [STEP_MOUNT_TMPFS] = "mount",
    [STEP_PIVOT_ROOT] = "pivot_root",
    [STEP_UMOUNT_OLD] = "umount2",
    [STEP_CHDIR] = "chdir",
    [STEP_NO_NEW_PRIVS] = "prctl",
    [STEP_CAPBSET_DROP] = "prctl",
    [STEP_SETGROUPS] = "setgroups",
    [STEP_SETRESGID] = "setresgid",
    [STEP_SETRESUID] = "setresuid",
    [STEP_CAPSET] = "capset",
    [STEP_EXEC] = "execveat",
};

static const char *const STEP_WHAT[] = {
    [STEP_PID] = "the intermediate child",
    [STEP_SETNS_NET] = "joining the net namespace",
    [STEP_SETNS_IPC] = "joining the ipc namespace",
    [STEP_SETNS_UTS] = "joining the uts namespace",
    [STEP_UNSHARE] = "unshare(CLONE_NEWPID|CLONE_NEWNS)",
    [STEP_CLONE] = "forking the pause",
    [STEP_SETSID] = "setsid",
    [STEP_DUP2] = "putting stdin/out/err on /dev/null",
    [STEP_OOM_OPEN] = "opening /proc/self/oom_score_adj",
    [STEP_OOM_WRITE] = "writing oom_score_adj",
    [STEP_CGROUP_OPEN] = "opening a cgroup file",
    [STEP_CGROUP_WRITE] = "joining a cgroup",
    [STEP_MOUNT_PRIVATE] = "making the pause's mounts private",
    [STEP_MOUNT_TMPFS] = "mounting the pause's empty root (tmpfs)",
    [STEP_PIVOT_ROOT] = "pivot_root to the empty root",
    [STEP_UMOUNT_OLD] = "detaching the old root",
    [STEP_CHDIR] = "chdir",
    [STEP_NO_NEW_PRIVS] = "PR_SET_NO_NEW_PRIVS",
    [STEP_CAPBSET_DROP] = "PR_CAPBSET_DROP",
    [STEP_SETGROUPS] = "setting the supplementary groups",
    [STEP_SETRESGID] = "setting the gid",
    [STEP_SETRESUID] = "setting the uid",
    [STEP_CAPSET] = "dropping every capability",
    [STEP_EXEC] = "executing the pause",
};

/* One SOCK_SEQPACKET message from a child. */
struct report {
    int step;   /* enum step */
    int errnum; /* 0 for STEP_PID */
    int pid;    /* STEP_PID: the pause's host pid; STEP_CGROUP_*: the file's index */
};

/* Everything the children need, prepared before the first clone. */
struct plan {
    int exec_fd;      /* the pause binary, O_PATH */
    int ns_fds[NNS];  /* net, ipc, uts; -1: stay */
    int devnull;      /* O_RDWR */
    int sock;         /* the children's end of the socketpair */
    int cap_last_cap; /* from /proc/sys/kernel/cap_last_cap */
    char oom[16];     /* oom_score_adj as text */
    size_t oom_len;
    pid_t parent_pid;
    char *intermediate_stack; /* the top of each child's stack (stacks grow down) */
    char *pause_stack;
    char *const *argv;
    char *const *envp;
    const char *const *cgroup_files; /* NULL-terminated, may be NULL */
    unsigned int uid, gid;           /* the pause's user and group */
    const unsigned int *groups;      /* its supplementary groups (gid_t), ngroups of them */
    int ngroups;
};

_Static_assert(sizeof(gid_t) == sizeof(unsigned int) && sizeof(uid_t) == sizeof(unsigned int),
               "ids are passed as unsigned int");

/* The raw syscalls: glibc's setgroups/setres*id signal every thread of the process to change
 * them all (setxid), and a child sharing the daemon's memory would signal the daemon's threads.
 * 32-bit ABIs with 16-bit legacy calls have *32 variants. */
#ifdef SYS_setresuid32
#define SYSCALL_SETGROUPS SYS_setgroups32
#define SYSCALL_SETRESGID SYS_setresgid32
#define SYSCALL_SETRESUID SYS_setresuid32
#else
#define SYSCALL_SETGROUPS SYS_setgroups
#define SYSCALL_SETRESGID SYS_setresgid
#define SYSCALL_SETRESUID SYS_setresuid
#endif

static const int NS_TYPES[NNS] = {CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS};
static const char *const NS_NAMES[NNS] = {"net", "ipc", "uts"};

/* ---- in the children: async-signal-safe only, no allocation ------------------------------ */

static void child_send(const struct plan *p, int step, int errnum, int pid)
{
    struct report r = {.step = step, .errnum = errnum, .pid = pid};

    while (send(p->sock, &r, sizeof(r), MSG_NOSIGNAL) < 0 && errno == EINTR)
        ;
}

static __attribute__((noreturn)) void child_fail_at(const struct plan *p, int step, int index)
{
    child_send(p, step, errno ? errno : EIO, index);
    _exit(1);
}

static __attribute__((noreturn)) void child_fail(const struct plan *p, int step)
{
    child_fail_at(p, step, 0);
}

/* The pause, PID 1 of the new PID namespace: isolate, become the pod's user, drop everything,
 * exec.  Order: the bounding set needs CAP_SETPCAP and setres*id need CAP_SETUID/CAP_SETGID, so
 * the bounding set goes first, then groups, gid, uid (leaving uid 0 empties the effective and
 * permitted sets), then capset(0) for what is left (all of it when the uid is 0).  The uid
 * change also makes the shared memory non-dumpable (suid_dumpable) until exec, so no process of
 * that uid can ptrace this child, which still shares the daemon's memory. */
static __attribute__((noreturn)) void pause_main(const struct plan *p)
{
    int keep[3] = {p->sock, p->exec_fd, p->devnull};
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    struct sigaction dfl;
    sigset_t none;
    int fd;

    pycrio_close_fds_except(keep, 3);
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < _NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &dfl, NULL); /* fails harmlessly for the libc-reserved ones */
    if (setsid() < 0)
        child_fail(p, STEP_SETSID);
    for (int i = 0; i < 3; i++)
        if (dup2(p->devnull, i) < 0)
            child_fail(p, STEP_DUP2);
    fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        child_fail(p, STEP_OOM_OPEN);
    if (pycrio_write_all(fd, p->oom, p->oom_len) < 0)
        child_fail(p, STEP_OOM_WRITE);
    close(fd);
    /* "0": this very thread, which the kernel moves without the global threadgroup lock (a
     * pid or a whole process written by the daemon costs an RCU grace period, ~20 ms). */
    for (int i = 0; p->cgroup_files != NULL && p->cgroup_files[i] != NULL; i++) {
        fd = open(p->cgroup_files[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            child_fail_at(p, STEP_CGROUP_OPEN, i);
        if (pycrio_write_all(fd, "0", 1) < 0)
            child_fail_at(p, STEP_CGROUP_WRITE, i);
        close(fd);
    }
    /* Its own root: an empty read-only tmpfs, so that /proc/1/root is not the host's. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        child_fail(p, STEP_MOUNT_PRIVATE);
    if (mount("tmpfs", ROOT_MOUNTPOINT, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              ROOT_OPTIONS) < 0)
        child_fail(p, STEP_MOUNT_TMPFS);
    if (chdir(ROOT_MOUNTPOINT) < 0)
        child_fail(p, STEP_CHDIR);
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        child_fail(p, STEP_PIVOT_ROOT);
    if (umount2(".", MNT_DETACH) < 0)
        child_fail(p, STEP_UMOUNT_OLD);
    if (chdir("/") < 0)
        child_fail(p, STEP_CHDIR);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        child_fail(p, STEP_NO_NEW_PRIVS);
    for (int cap = 0; cap <= p->cap_last_cap; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            child_fail(p, STEP_CAPBSET_DROP);
    if (syscall(SYSCALL_SETGROUPS, (long)p->ngroups, p->groups) < 0)
        child_fail(p, STEP_SETGROUPS);
    if (syscall(SYSCALL_SETRESGID, p->gid, p->gid, p->gid) < 0)
        child_fail(p, STEP_SETRESGID);
    if (syscall(SYSCALL_SETRESUID, p->uid, p->uid, p->uid) < 0)
        child_fail(p, STEP_SETRESUID);
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capset, &hdr, data) < 0)
        child_fail(p, STEP_CAPSET);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    syscall(SYS_execveat, p->exec_fd, "", p->argv, p->envp, AT_EMPTY_PATH);
    {
        int saved = errno;
        sigset_t all;

        sigfillset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        errno = saved;
    }
    child_fail(p, STEP_EXEC);
}

static int pause_entry(void *arg)
{
    pause_main(arg);
}

static __attribute__((noreturn)) void intermediate_main(const struct plan *p)
{
    int keep[NNS + 3] = {p->sock, p->exec_fd, p->devnull, p->ns_fds[0], p->ns_fds[1], p->ns_fds[2]};
    long pid;

    pycrio_close_fds_except(keep, NNS + 3); /* -1 entries are ignored */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != p->parent_pid)
        _exit(1);
    for (int i = 0; i < NNS; i++)
        if (p->ns_fds[i] >= 0 && setns(p->ns_fds[i], NS_TYPES[i]) < 0)
            child_fail(p, STEP_SETNS_NET + i);
    if (unshare(CLONE_NEWPID | CLONE_NEWNS) < 0)
        child_fail(p, STEP_UNSHARE);
    /* Returns once the pause has exec'd or died (CLONE_VFORK). */
    pid = clone(pause_entry, p->pause_stack, CHILD_CLONE_FLAGS, (void *)p);
    if (pid < 0)
        child_fail(p, STEP_CLONE);
    child_send(p, STEP_PID, 0, (int)pid);
    _exit(0);
}

static int intermediate_entry(void *arg)
{
    intermediate_main(arg);
}

/* ---- in the parent ----------------------------------------------------------------------- */

static int reap(pid_t pid)
{
    int status;

    for (;;) {
        if (waitpid(pid, &status, 0) == pid)
            return 0;
        if (errno == EINTR)
            continue;
        return errno == ECHILD ? 0 : -errno;
    }
}

static int read_cap_last_cap(struct pycrio_err *err)
{
    const char *path = "/proc/sys/kernel/cap_last_cap";
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    char buf[16] = {0};
    ssize_t n;
    long v;

    if (fd < 0)
        return pycrio_err_set(err, errno, "open", path, "open %s: %s", path, strerror(errno));
    do
        n = read(fd, buf, sizeof(buf) - 1);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return pycrio_err_set(err, errno, "read", path, "read %s: %s", path, strerror(errno));
    v = strtol(buf, NULL, 10);
    if (v <= 0 || v > CAP_LAST_CAP_MAX)
        return pycrio_err_set(err, EINVAL, "read", path, "%s: unexpected value '%s'", path, buf);
    return (int)v;
}

static void close_plan(struct plan *p)
{
    pycrio_closep(&p->exec_fd);
    pycrio_closep(&p->devnull);
    for (int i = 0; i < NNS; i++)
        pycrio_closep(&p->ns_fds[i]);
}

#define cleanup_plan __attribute__((cleanup(close_plan)))

static int report_failure(const struct report *r, const char *pause_path, const char *const *ns,
                          int oom_score_adj, const struct plan *p, struct pycrio_err *err)
{
    int e = r->errnum > 0 ? r->errnum : EIO;
    int step = r->step >= 0 && r->step <= STEP_EXEC ? r->step : STEP_CLONE;

    if (step >= STEP_SETNS_NET && step <= STEP_SETNS_UTS) {
        const char *path = ns[step - STEP_SETNS_NET];

        return pycrio_err_set(err, e, "setns", path, "pause %s: setns %s (%s namespace): %s",
                              pause_path, path, NS_NAMES[step - STEP_SETNS_NET], strerror(e));
    }
    if ((step == STEP_CGROUP_OPEN || step == STEP_CGROUP_WRITE) && p->cgroup_files != NULL) {
        const char *path = "?";

        for (int i = 0; p->cgroup_files[i] != NULL; i++)
            if (i == r->pid)
                path = p->cgroup_files[i];
        return pycrio_err_set(err, e, STEP_NAMES[step], path, "pause %s: %s %s: %s", pause_path,
                              step == STEP_CGROUP_OPEN ? "open" : "writing 0 to", path,
                              strerror(e));
    }
    if (step == STEP_SETGROUPS && p->ngroups > 0)
        return pycrio_err_set(err, e, "setgroups", pause_path,
                              "pause %s: setgroups (%d supplementary groups, the first %u): %s",
                              pause_path, p->ngroups, p->groups[0], strerror(e));
    if (step == STEP_SETGROUPS)
        return pycrio_err_set(err, e, "setgroups", pause_path,
                              "pause %s: setgroups (no supplementary groups): %s", pause_path,
                              strerror(e));
    if (step == STEP_SETRESGID || step == STEP_SETRESUID)
        return pycrio_err_set(err, e, STEP_NAMES[step], pause_path, "pause %s: %s(%u): %s",
                              pause_path, STEP_NAMES[step],
                              step == STEP_SETRESGID ? p->gid : p->uid, strerror(e));
    if (step == STEP_OOM_WRITE)
        return pycrio_err_set(err, e, "write", "/proc/self/oom_score_adj",
                              "pause %s: writing oom_score_adj %d: %s", pause_path, oom_score_adj,
                              strerror(e));
    return pycrio_err_set(err, e, STEP_NAMES[step], pause_path, "pause %s: %s: %s", pause_path,
                          STEP_WHAT[step], strerror(e));
}

static int open_plan(struct plan *p, const char *pause_path, const char *const *ns,
                     int oom_score_adj, struct pycrio_err *err)
{
    int n;

    p->exec_fd = open(pause_path, O_PATH | O_CLOEXEC);
    if (p->exec_fd < 0)
        return pycrio_err_set(err, errno, "open", pause_path, "pause binary %s: %s", pause_path,
                              strerror(errno));
    for (int i = 0; i < NNS; i++) {
        if (ns[i] == NULL)
            continue;
        p->ns_fds[i] = open(ns[i], O_RDONLY | O_CLOEXEC);
        if (p->ns_fds[i] < 0)
            return pycrio_err_set(err, errno, "open", ns[i], "%s namespace file %s: %s",
                                  NS_NAMES[i], ns[i], strerror(errno));
    }
    p->devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (p->devnull < 0)
        return pycrio_err_set(err, errno, "open", "/dev/null", "open /dev/null: %s",
                              strerror(errno));
    if ((p->cap_last_cap = read_cap_last_cap(err)) < 0)
        return p->cap_last_cap;
    n = snprintf(p->oom, sizeof(p->oom), "%d", oom_score_adj);
    p->oom_len = (size_t)n;
    return 0;
}

static int check_ids(unsigned int uid, unsigned int gid, const unsigned int *groups, int ngroups,
                     struct pycrio_err *err)
{
    if (uid == NO_ID || gid == NO_ID)
        return pycrio_err_set(err, EINVAL, "pause_spawn", "",
                              "pause uid %u / gid %u: %u is not an id", uid, gid, NO_ID);
    if (ngroups < 0 || ngroups > NGROUPS_LIMIT || (ngroups > 0 && groups == NULL))
        return pycrio_err_set(err, EINVAL, "pause_spawn", "",
                              "pause: %d supplementary groups (0 to %d, with an array)", ngroups,
                              NGROUPS_LIMIT);
    for (int i = 0; i < ngroups; i++)
        if (groups[i] == NO_ID)
            return pycrio_err_set(err, EINVAL, "pause_spawn", "",
                                  "pause supplementary group %d: %u is not an id", i, NO_ID);
    return 0;
}

/* The uid change in the pause marks the memory it shares with the daemon (CLONE_VM) non-dumpable
 * (see pause_main); once it has exec'd, this puts the daemon back as it was.
 *
 * Spawns are serialised by spawn_lock: a restore by one spawn while another's child ran with a
 * new uid and the shared memory would make that child traceable by the new uid (its memory the
 * daemon's) until it execs.  The lock is process-wide because the flag is: it belongs to the
 * memory, not to a call. */
static pthread_mutex_t spawn_lock = PTHREAD_MUTEX_INITIALIZER;

static void restore_dumpable(int before)
{
    if ((CHILD_CLONE_FLAGS & CLONE_VM) && before == 1 && prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 1)
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

int pycrio_pause_spawn(const char *pause_path, const char *netns, const char *ipcns,
                       const char *utsns, int oom_score_adj, const char *const *cgroup_files,
                       unsigned int uid, unsigned int gid, const unsigned int *groups, int ngroups,
                       struct pycrio_err *err)
{
    char *const argv[] = {PAUSE_ARGV0, NULL};
    char *const envp[] = {NULL};
    const char *ns[NNS] = {netns, ipcns, utsns};
    cleanup_plan struct plan p = {.exec_fd = -1,
                                  .ns_fds = {-1, -1, -1},
                                  .devnull = -1,
                                  .sock = -1,
                                  .argv = argv,
                                  .envp = envp,
                                  .cgroup_files = cgroup_files,
                                  .uid = uid,
                                  .gid = gid,
                                  .groups = groups,
                                  .ngroups = ngroups};
    cleanup_close int sock_parent = -1;
    struct report failure = {.step = -1};
    char *stacks;
    sigset_t all, old;
    int sv[2], rc, dumpable, pause_pid = 0;
    long child;

    if (pause_path == NULL || pause_path[0] == '\0')
        return pycrio_err_set(err, EINVAL, "pause_spawn", "", "empty pause path");
    if (oom_score_adj < -1000 || oom_score_adj > 1000)
        return pycrio_err_set(err, EINVAL, "pause_spawn", "", "oom_score_adj %d out of range",
                              oom_score_adj);
    if ((rc = check_ids(uid, gid, groups, ngroups, err)) < 0)
        return rc;
    for (int i = 0; i < NNS; i++)
        if (ns[i] != NULL && ns[i][0] == '\0')
            ns[i] = NULL;
    if ((rc = open_plan(&p, pause_path, ns, oom_score_adj, err)) < 0)
        return rc;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return pycrio_err_set(err, errno, "socketpair", "", "socketpair: %s", strerror(errno));
    sock_parent = sv[0];
    p.sock = sv[1];
    p.parent_pid = getpid();
    stacks = mmap(NULL, 2 * CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stacks == MAP_FAILED) {
        rc = pycrio_err_set(err, errno, "mmap", "", "mmap for the children's stacks: %s",
                            strerror(errno));
        close(p.sock);
        return rc;
    }
    p.intermediate_stack = stacks + CHILD_STACK_SIZE;
    p.pause_stack = stacks + 2 * CHILD_STACK_SIZE;

    pthread_mutex_lock(&spawn_lock);
    dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* clone(), not fork(): no atfork handlers of the daemon's libraries, and (CLONE_VM) no copy
     * of its page tables.  This thread sleeps until the intermediate exits (CLONE_VFORK). */
    child = clone(intermediate_entry, p.intermediate_stack, CHILD_CLONE_FLAGS, &p);
    {
        int saved = errno;

        pthread_sigmask(SIG_SETMASK, &old, NULL);
        restore_dumpable(dumpable);
        pthread_mutex_unlock(&spawn_lock);
        close(p.sock);
        munmap(stacks, 2 * CHILD_STACK_SIZE);
        errno = saved;
    }
    if (child < 0)
        return pycrio_err_set(err, errno, "clone", pause_path, "clone for pause %s: %s", pause_path,
                              strerror(errno));

    /* Records until EOF: the pid from the intermediate, a failure from either child.  EOF
     * comes when the intermediate has exited and the pause has exec'd (CLOEXEC) or died. */
    for (;;) {
        struct report r;
        ssize_t n = recv(sock_parent, &r, sizeof(r), 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (n != (ssize_t)sizeof(r))
            continue;
        if (r.step == STEP_PID)
            pause_pid = r.pid;
        else if (failure.step < 0)
            failure = r;
    }
    rc = reap((pid_t)child);
    if (failure.step >= 0)
        return report_failure(&failure, pause_path, ns, oom_score_adj, &p, err);
    if (rc < 0)
        return pycrio_err_set(err, -rc, "waitpid", pause_path, "waitpid %ld: %s", child,
                              strerror(-rc));
    if (pause_pid <= 0)
        return pycrio_err_set(err, EIO, "clone", pause_path,
                              "pause %s: the intermediate child ended without a report",
                              pause_path);
    return pause_pid;
}
