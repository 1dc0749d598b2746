/* netns_socket.c: socket(2) inside another network namespace, without moving a daemon thread. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal/err_set.h"
#include "include/netns_socket.h"

#define CHILD_STACK_SIZE (64 * 1024)

struct netns_job {
    int nsfd;
    int domain;
    int type;
    int fd;     /* out: the socket, or -1 */
    int errnum; /* out: errno of the failed step */
    int step;   /* out: 1 setns, 2 socket */
};

static int child_main(void *arg)
{
    struct netns_job *job = arg;
    long rc;

    rc = syscall(SYS_setns, job->nsfd, CLONE_NEWNET);
    if (rc < 0) {
        job->errnum = errno;
        job->step = 1;
        _exit(0);
    }
    rc = syscall(SYS_socket, job->domain, job->type | SOCK_CLOEXEC, 0);
    if (rc < 0) {
        job->errnum = errno;
        job->step = 2;
        _exit(0);
    }
    job->fd = (int)rc;
    _exit(0);
}

int pycrio_netns_socket(const char *netns_path, int domain, int type, struct pycrio_err *err)
{
    struct netns_job job = {.nsfd = -1, .domain = domain, .type = type, .fd = -1};
    sigset_t all, saved;
    char *stack;
    pid_t child;
    int status, saved_errno;

    if (netns_path == NULL || netns_path[0] == '\0')
        return pycrio_err_set(err, EINVAL, "open", "", "empty network namespace path");
    job.nsfd = open(netns_path, O_RDONLY | O_CLOEXEC);
    if (job.nsfd < 0) {
        saved_errno = errno;
        return pycrio_err_set(err, saved_errno, "open", netns_path, "open network namespace %s: %s",
                              netns_path, strerror(saved_errno));
    }
    stack = malloc(CHILD_STACK_SIZE);
    if (stack == NULL) {
        close(job.nsfd);
        return pycrio_err_set(err, ENOMEM, "malloc", "", "no memory for a child stack");
    }
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    child = clone(child_main, stack + CHILD_STACK_SIZE,
                  CLONE_VM | CLONE_FILES | CLONE_VFORK | SIGCHLD, &job);
    saved_errno = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (child < 0) {
        free(stack);
        close(job.nsfd);
        return pycrio_err_set(err, saved_errno, "clone", netns_path, "clone: %s",
                              strerror(saved_errno));
    }
    /* ECHILD: a reaper elsewhere took it first; the record tells the outcome either way. */
    while (waitpid(child, &status, __WALL) < 0 && errno == EINTR)
        ;
    free(stack);
    close(job.nsfd);
    if (job.fd < 0) {
        const char *step = job.step == 1 ? "setns" : "socket";

        if (job.errnum == 0)
            job.errnum = EIO;
        return pycrio_err_set(err, job.errnum, step, netns_path, "%s in %s: %s", step, netns_path,
                              strerror(job.errnum));
    }
    return job.fd;
}
