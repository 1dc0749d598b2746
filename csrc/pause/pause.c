/* pause.c: pycrio-pause, PID 1 of a pod that shares one PID namespace.
 *
 * It blocks SIGTERM, SIGINT and SIGCHLD and waits for them with sigwait:
 * a waited-for signal is delivered even to PID 1 of a namespace (which the
 * kernel shields from default actions), so a stop ends it at once.  Orphans
 * of the pod are re-parented to it; it reaps them so none stays a zombie.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void reap_all(void)
{
    for (;;) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);

        if (pid > 0)
            continue;
        if (pid < 0 && errno == EINTR)
            continue;
        return; /* 0: children left but none exited; -1 ECHILD: none left */
    }
}

int main(int argc, char **argv)
{
    sigset_t set;

    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        puts("pycrio-pause 1");
        return 0;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0) {
        perror("pycrio-pause: sigprocmask");
        return 1;
    }
    for (;;) {
        int sig = 0;
        int rc = sigwait(&set, &sig);

        if (rc != 0) {
            errno = rc;
            perror("pycrio-pause: sigwait");
            return 1;
        }
        if (sig == SIGCHLD) {
            reap_all();
            continue;
        }
        return 0; /* SIGTERM or SIGINT: a clean stop */
    }
}
