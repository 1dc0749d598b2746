/* ns.h: creating pod namespaces (net, ipc, uts) and pinning each to a file, CRI-O's pinns job.
 *
 * A namespace lives as long as a process is in it or something holds it open.  A pod's
 * namespaces must outlive every process of the pod (and the daemon), so each one is pinned:
 * the nsfs file /proc/<pid>/ns/<kind> is bind-mounted onto an empty file, which keeps the
 * namespace alive until that mount is detached.  runc then joins it by path.
 *
 * The daemon is multithreaded and must never change its own namespaces, so the unshare
 * happens in a short-lived child.  It is cloned as posix_spawn does (CLONE_VM | CLONE_VFORK, on
 * a small stack of its own; no atfork handlers, no copy of the daemon's page tables), so the
 * daemon thread sleeps until the child exits, and the child pins its namespaces itself:
 *
 *   daemon thread (pycrio_ns_pin)              child (signals blocked)
 *   -----------------------------              -----------------------
 *   validate; build every path and value
 *   open the dir; socketpair; block signals
 *   clone() ----------------------------------> close every inherited fd but its socket, the dir
 *     (sleeps)                                   unshare(kinds)
 *                                                sethostname, bring lo up,
 *                                                write sysctls under /proc/sys
 *                                                for each kind:
 *                                                  openat(dir, kind, O_CREAT|O_EXCL, 0444)
 *                                                  mount("/proc/self/ns/<kind>", that file,
 * MS_BIND) recv(report) <----------------------------- send(report: step, errno, index, pinned);
 * _exit restore signals; waitpid(child) failed: error naming the step / sysctl / pin file; unpin
 * every pin the report names
 *
 * Sanitized (ASan) builds clone without CLONE_VM | CLONE_VFORK (a plain fork): ASan's
 * interceptors keep process-wide state that a memory-sharing child would change.
 *
 * Async-signal-safety rule: between clone and _exit the child allocates nothing and calls
 * only async-signal-safe functions (plain syscalls: close_range, prctl, unshare, sethostname,
 * socket, ioctl, open, write, fchmod, mount, send, close, _exit).  Everything it needs (paths,
 * values, the ifreq) is prepared by the parent before the clone; it reports as a fixed-size
 * record through a socketpair, never through pycrio_err_set (vsnprintf).  Signals stay blocked
 * in the child; it dies when its parent thread exits (PR_SET_PDEATHSIG).
 *
 * Sysctl keys ("net.ipv4.ip_forward=1") are checked before the clone: only [a-z0-9_.-], no
 * "..", no "/", and each key must belong to a namespace being created (net.* needs NET;
 * kernel.shm*, kernel.msg*, kernel.sem* and fs.mqueue.* need IPC; kernel.hostname and
 * kernel.domainname need UTS), so that a key can never change the host.  "a.b.c" is written
 * to /proc/sys/a/b/c.
 *
 * Thread-safe: no global state; several pins may run at once.  The outcome comes from the
 * child's report, not its exit status, so a reaper elsewhere (waitpid(-1), SIGCHLD ignored)
 * that takes the child first does no harm (ECHILD counts as reaped).
 * Fed to cffi's cdef as is (no #if).  See docs/namespaces.md.
 */

#define PYCRIO_NS_NET 1
#define PYCRIO_NS_IPC 2
#define PYCRIO_NS_UTS 4

/* Create fresh namespaces of `kinds` (a mask of PYCRIO_NS_*) and pin each to a file in dir:
 * "<dir>/net", "<dir>/ipc", "<dir>/uts" (created with O_EXCL, mode 0444).  dir must exist.
 * hostname (NULL or "": none) is set in the new UTS namespace; sysctls is a NULL-terminated array
 * of "key=value" (may be NULL) written inside the new namespaces; the loopback interface of
 * a new NET namespace is brought up.  Returns the number of pins made, or -errno; on failure
 * nothing is left pinned (files removed, mounts detached). */
int pycrio_ns_pin(const char *dir, int kinds, const char *hostname, const char *const *sysctls,
                  struct pycrio_err *err);

/* Undo one pin: detach the bind mount at path (MNT_DETACH, every stacked one) and unlink the
 * file.  A missing path is success.  Returns 1 when something was removed, 0 when nothing
 * was there, or -errno. */
int pycrio_ns_unpin(const char *path, struct pycrio_err *err);
