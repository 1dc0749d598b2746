/* netns_socket.h: a socket that lives in another network namespace (port-forward).
 *
 * A socket belongs to the network namespace its creator was in when it called socket(2), and
 * stays there; connect, send and recv need no namespace switch afterwards.  The daemon must
 * never setns one of its own threads, so the socket is made by a short-lived child that shares
 * the daemon's memory and descriptor table (clone CLONE_VM | CLONE_FILES | CLONE_VFORK):
 *
 *   daemon thread                               child (signals blocked, on a small stack)
 *   -------------                               -----------------------------------------
 *   open(netns_path); block signals; clone ---> setns(nsfd, CLONE_NEWNET)
 *   (suspended until the child exits)            socket(domain, type | SOCK_CLOEXEC, 0)
 *                                                 store fd or errno; _exit(0)
 *   restore signals; waitpid; close(nsfd)
 *   return the fd, now in the shared table
 *
 * The child calls only raw syscalls and writes only to a record the parent prepared.  Costs
 * about as much as a vfork (tens of microseconds), whatever the daemon's size.
 * Fed to cffi's cdef as is (no #if).
 */

/* A new close-on-exec socket(domain, type, 0) inside the network namespace pinned at
 * netns_path: the descriptor (>= 0, the caller owns it) or -errno. */
int pycrio_netns_socket(const char *netns_path, int domain, int type, struct pycrio_err *err);
