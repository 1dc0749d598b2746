/* pause_spawn.h: starting pycrio-pause as PID 1 of a pod's new PID namespace, without runc.
 *
 * A pod that shares one PID namespace needs a process to own it.  Running pycrio-pause through
 * runc and pycrio-monitor costs ~40 ms; this starts it directly as a minimal container:
 *
 *   daemon thread (pycrio_pause_spawn)        intermediate (signals blocked)
 *   ----------------------------------        ------------------------------
 *   open the pause binary (O_PATH), the ns
 *   files, /dev/null (all O_CLOEXEC); read
 *   /proc/sys/kernel/cap_last_cap
 *   socketpair; block signals; clone() -----> setns(net, ipc, uts: those given)
 *   restore signals, dumpable                 unshare(CLONE_NEWPID | CLONE_NEWNS)
 *                                             clone() -----------------> pause (PID 1 there)
 *   recv(pid) <------------------------------ send(pid); _exit(0)       close other fds
 *   waitpid(intermediate)                                               default signal actions
 *   recv until EOF <------------------------------------------------- setsid; 0-2 on /dev/null
 *     a record: failure (errno, step)                                  oom_score_adj;
 *                                                                      "0" to each cgroup file
 *     EOF: exec succeeded (CLOEXEC socket)                             mounts private; tmpfs
 *                                                                       (ro, empty) pivot_root'ed
 *                                                                       as "/", old root detached
 *                                                                      no_new_privs; bounding set
 *                                                                       dropped; setgroups,
 *                                                                       setresgid, setresuid (the
 *                                                                       pod's user); capset(0)
 *                                                                      execveat(fd, argv "/pause",
 *                                                                       empty environment)
 *
 * The pause gets its own mount namespace whose only mount is an empty read-only tmpfs: a
 * container sharing its PID namespace reaches /proc/1/root, and that must not be the host's
 * root.  Exec goes through the descriptor opened before the clone, so the binary must be
 * static (no ELF interpreter in the empty root): build.py never sanitizes pycrio-pause.
 *
 * Both clones are CLONE_VM | CLONE_VFORK, as posix_spawn does: each child runs on a small stack
 * of its own in the daemon's memory (no page-table copy: a fork of the daemon cost about 1 ms
 * per 15 MiB of its RSS), and its parent sleeps until it has exec'd or exited.  The children
 * only read the plan and write their own stacks (and errno, the sleeping thread's).
 *
 * The pause takes the pod's user (uid, gid, supplementary groups) with the raw syscalls, not
 * glibc's wrappers, which would signal every thread of the daemon (setxid broadcast).  Leaving
 * uid/gid 0 makes the kernel mark the shared memory non-dumpable until the exec (so no process of
 * the new uid can ptrace the child while it shares the daemon's memory); the daemon thread puts
 * its dumpable flag back once its clone returns.
 *
 * Async-signal-safety rule: after each clone the children allocate nothing and call only
 * async-signal-safe functions (plain syscalls); every path and value is prepared before the
 * clone, and failures travel as fixed-size records over the socketpair, never through
 * pycrio_err_set (vsnprintf).
 *
 * Reaping: the caller reaps only the intermediate.  The pause's parent is then whatever
 * reaper the system has (PID 1, or a subreaper above the daemon); the daemon does not become
 * a subreaper.  Where PID 1 does not reap, an exited pause stays a zombie until it does; it
 * holds no namespace but its pid (a pidfd still tells it apart).  A pause that fails after
 * being forked (say, exec) exits at once, likewise left to that reaper.
 *
 * Thread-safe: no global state.  Fed to cffi's cdef as is (no #if).
 */

/* Start pause_path as PID 1 of a new PID namespace that has joined the pinned namespaces given
 * (netns/ipcns/utsns: paths of pinned ns files, or NULL to stay in the daemon's).  Returns the
 * host pid of the pause process (>0) or -errno.  The pause runs as uid and gid with the ngroups
 * supplementary groups in groups (none when 0; the array may be NULL then), set once the
 * bounding set is dropped (up to /proc/sys/kernel/cap_last_cap); then every capability dropped
 * (capset to zero, whatever the uid), no_new_privs, a new session, stdin/out/err on /dev/null,
 * no other fds, cwd "/" (an empty read-only tmpfs in its own mount namespace), an empty
 * environment, argv {"/pause"}, and oom_score_adj written to /proc/self/oom_score_adj (the
 * caller clamps it; a failure to write it is an error).
 * cgroup_files (NULL-terminated, may be NULL): files the pause writes "0" to before it drops
 * its privileges, joining those cgroups itself (v1: "<dir>/tasks" of each hierarchy, v2:
 * "<dir>/cgroup.procs"); the directories must exist (and, for cpuset, have cpus and mems).
 * A thread moving itself skips the kernel's global threadgroup lock, whose RCU grace period
 * costs ~20 ms when the daemon writes the pid instead.  A uid, gid or group 4294967295
 * ((uid_t)-1), or ngroups outside 0..65536: EINVAL before anything starts. */
int pycrio_pause_spawn(const char *pause_path, const char *netns, const char *ipcns,
                       const char *utsns, int oom_score_adj, const char *const *cgroup_files,
                       unsigned int uid, unsigned int gid, const unsigned int *groups, int ngroups,
                       struct pycrio_err *err);
