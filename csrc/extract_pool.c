/* extract_pool.c: small regular files written by worker threads while the calling thread goes on.
 *
 * On a disk most of a layer's time is the filesystem creating inodes, one file after another.
 * With the data of the next files already decoded, other threads can create them meanwhile.
 * The calling thread stays the only one that parses, resolves paths, makes directories, links
 * and removes.  A worker only creates a new file in a directory the calling thread resolved
 * (the job holds its own dup of that O_PATH fd), writes its bytes, sets owner, mode and mtime
 * and closes it.
 *
 * The order the tar asks for is kept by draining (waiting until every queued file is written)
 * before anything that could see or replace a queued file: an entry whose path, or a directory
 * above it, is a queued file; a hard link; a whiteout; a removal; the directory times at the
 * end.  A worker that finds its name taken (an earlier entry of the layer) leaves the job to
 * the drain, which replaces the entry in the calling thread as the serial code does.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal/err_set.h"
#include "internal/extract.h"
#include "internal/fdio.h"

#define XPOOL_QUEUE 256     /* queued files at most */
#define XPOOL_WORKERS_MAX 4 /* threads writing files */
#define XPOOL_SET_MAX 4096  /* queued paths remembered; a drain empties the set */
#define XPOOL_SET_CAP 8192  /* slots of the open-addressing set (twice the max) */
#define XPOOL_STEP_MAX 16

struct xjob {
    int dirfd;  /* O_PATH of the parent, owned */
    char *name; /* final component */
    char *path; /* the tar path, for messages */
    unsigned char *data;
    size_t size;
    unsigned int uid, gid, mode;
    bool fast; /* created root:root with its final mode: no fchown, no fchmod */
    struct timespec mtime;
};

struct xpool {
    pthread_mutex_t mu;
    pthread_cond_t has_work, has_room, idle;
    struct xjob queue[XPOOL_QUEUE];
    size_t head, count, busy;
    bool stop;
    long delay_us; /* tests: each job waits this long first, so the queue runs far behind */
    int nworkers;
    pthread_t workers[XPOOL_WORKERS_MAX];
    unsigned long long written;
    struct xjob *redo; /* jobs whose name was taken: the drain replaces the entry */
    size_t nredo, redo_cap;
    int err_errno; /* the first worker failure */
    char err_step[XPOOL_STEP_MAX];
    char err_path[PATH_MAX];
    char *set[XPOOL_SET_CAP]; /* cleaned paths of queued files since the last drain */
    size_t set_n;
};

static void job_free(struct xjob *j)
{
    if (j->dirfd >= 0)
        close(j->dirfd);
    free(j->name);
    free(j->path);
    free(j->data);
    memset(j, 0, sizeof(*j));
    j->dirfd = -1;
}

/* Create, fill and finish the file; 0, EEXIST (the name is taken), or another errno with *step. */
static int write_job(const struct xjob *j, const char **step)
{
    const int oflags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
    struct timespec ts[2] = {j->mtime, j->mtime};
    int fd = openat(j->dirfd, j->name, oflags, j->fast ? (mode_t)j->mode : 0600);
    int rc = 0;

    if (fd < 0) {
        *step = "openat";
        return errno;
    }
    if (j->size > 0 && pycrio_write_all(fd, j->data, j->size) < 0)
        *step = "write", rc = errno;
    else if (!j->fast && fchown(fd, j->uid, j->gid) < 0)
        *step = "fchown", rc = errno;
    else if (!j->fast && fchmod(fd, j->mode) < 0)
        *step = "fchmod", rc = errno;
    else if (futimens(fd, ts) < 0)
        *step = "futimens", rc = errno;
    close(fd);
    return rc;
}

/* Called with p->mu held. */
static void keep_for_redo(struct xpool *p, struct xjob *j)
{
    if (p->nredo == p->redo_cap) {
        size_t cap = p->redo_cap ? 2 * p->redo_cap : 16;
        struct xjob *r = reallocarray(p->redo, cap, sizeof(*r));

        if (r == NULL) {
            if (p->err_errno == 0) {
                p->err_errno = ENOMEM;
                snprintf(p->err_step, sizeof(p->err_step), "malloc");
                snprintf(p->err_path, sizeof(p->err_path), "%s", j->path);
            }
            job_free(j);
            return;
        }
        p->redo = r;
        p->redo_cap = cap;
    }
    p->redo[p->nredo++] = *j;
    j->dirfd = -1, j->name = j->path = NULL, j->data = NULL;
}

static void *worker(void *arg)
{
    struct xpool *p = arg;
    sigset_t all;

    sigfillset(&all); /* the daemon's signals are not for this thread */
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        struct xjob j;
        const char *step = "openat";
        bool failed;
        int e = 0;

        while (p->count == 0 && !p->stop)
            pthread_cond_wait(&p->has_work, &p->mu);
        if (p->count == 0)
            break; /* stopping, nothing left */
        j = p->queue[p->head];
        p->head = (p->head + 1) % XPOOL_QUEUE;
        p->count--;
        p->busy++;
        pthread_cond_signal(&p->has_room);
        failed = p->err_errno != 0 || p->stop; /* after a failure, or when abandoned: skip */
        pthread_mutex_unlock(&p->mu);
        if (!failed && p->delay_us > 0)
            usleep((useconds_t)p->delay_us);
        if (!failed)
            e = write_job(&j, &step);
        pthread_mutex_lock(&p->mu);
        if (!failed && e == 0)
            p->written++;
        else if (!failed && e == EEXIST)
            keep_for_redo(p, &j);
        else if (!failed && p->err_errno == 0) {
            p->err_errno = e;
            snprintf(p->err_step, sizeof(p->err_step), "%s", step);
            snprintf(p->err_path, sizeof(p->err_path), "%s", j.path);
        }
        job_free(&j);
        p->busy--;
        if (p->count == 0 && p->busy == 0)
            pthread_cond_broadcast(&p->idle);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

void xpool_free(struct xpool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->has_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nworkers; i++)
        pthread_join(p->workers[i], NULL);
    for (size_t i = 0; i < p->count; i++)
        job_free(&p->queue[(p->head + i) % XPOOL_QUEUE]);
    for (size_t i = 0; i < p->nredo; i++)
        job_free(&p->redo[i]);
    free(p->redo);
    for (size_t i = 0; i < XPOOL_SET_CAP; i++)
        free(p->set[i]);
    pthread_cond_destroy(&p->has_work);
    pthread_cond_destroy(&p->has_room);
    pthread_cond_destroy(&p->idle);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static int pool_start(struct xctx *c)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int want = cpus < 2 ? 2 : cpus > XPOOL_WORKERS_MAX ? XPOOL_WORKERS_MAX : (int)cpus;
    struct xpool *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return xfail(c, ENOMEM, "malloc", "the file writers");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->has_work, NULL);
    pthread_cond_init(&p->has_room, NULL);
    pthread_cond_init(&p->idle, NULL);
    /* Tests make the workers slow to prove the order holds however far behind they run. */
    if (getenv("PYCRIO_TEST_EXTRACT_WORKER_DELAY_US") != NULL)
        p->delay_us = strtol(getenv("PYCRIO_TEST_EXTRACT_WORKER_DELAY_US"), NULL, 10);
    for (int i = 0; i < want; i++) {
        int rc = pthread_create(&p->workers[i], NULL, worker, p);

        if (rc != 0)
            break;
        p->nworkers++;
    }
    if (p->nworkers == 0) {
        xpool_free(p);
        c->no_pool = true; /* no thread to be had: write in this thread */
        return 0;
    }
    c->pool = p;
    return 0;
}

/* ---- the set of queued paths ---- */

static size_t hash_prefix(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */

    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return (size_t)h;
}

static bool set_has(const struct xpool *p, const char *s, size_t n)
{
    for (size_t i = hash_prefix(s, n) % XPOOL_SET_CAP;; i = (i + 1) % XPOOL_SET_CAP) {
        const char *e = p->set[i];

        if (e == NULL)
            return false;
        if (strncmp(e, s, n) == 0 && e[n] == '\0')
            return true;
    }
}

static int set_add(struct xpool *p, const char *s)
{
    size_t i = hash_prefix(s, strlen(s)) % XPOOL_SET_CAP;
    char *copy = strdup(s);

    if (copy == NULL)
        return -ENOMEM;
    while (p->set[i] != NULL)
        i = (i + 1) % XPOOL_SET_CAP;
    p->set[i] = copy;
    p->set_n++;
    return 0;
}

static void set_clear(struct xpool *p)
{
    for (size_t i = 0; i < XPOOL_SET_CAP && p->set_n > 0; i++)
        if (p->set[i] != NULL) {
            free(p->set[i]);
            p->set[i] = NULL;
            p->set_n--;
        }
}

/* Whether the cleaned path, or a directory above it, is a queued file.  Only the calling
 * thread touches the set. */
static bool queued(const struct xpool *p, const char *path)
{
    size_t n = strlen(path);

    if (p->set_n == 0)
        return false;
    for (size_t i = 1; i <= n; i++)
        if ((i == n || path[i] == '/') && set_has(p, path, i))
            return true;
    return false;
}

/* ---- the calling thread ---- */

/* The drain's part of a job whose name was taken: replace the entry, then write the file. */
static int redo(struct xctx *c, struct xjob *j)
{
    const char *step = "openat";
    int rc, e;

    c->entry = j->path;
    if ((rc = xentry_remove_now(c, j->dirfd, j->name)) < 0)
        return rc;
    e = write_job(j, &step);
    if (e != 0)
        return xfail_sys(c, e, step, "creating the file");
    c->stats->files++;
    return 0;
}

int xpool_drain(struct xctx *c)
{
    struct xpool *p = c->pool;
    const char *saved = c->entry;
    int rc = 0;

    if (p == NULL)
        return 0;
    pthread_mutex_lock(&p->mu);
    while (p->count > 0 || p->busy > 0)
        pthread_cond_wait(&p->idle, &p->mu);
    c->stats->files += p->written;
    p->written = 0;
    if (p->err_errno != 0) {
        c->entry = p->err_path;
        rc = xfail(c, p->err_errno, p->err_step, "creating the file: %s: %s", p->err_step,
                   strerror(p->err_errno));
    }
    pthread_mutex_unlock(&p->mu);
    /* The workers are idle until the next job: the redo list and the set need no lock. */
    set_clear(p);
    for (size_t i = 0; i < p->nredo; i++) {
        if (rc == 0)
            rc = redo(c, &p->redo[i]);
        job_free(&p->redo[i]);
    }
    p->nredo = 0;
    c->entry = saved;
    return rc;
}

int xpool_before(struct xctx *c, const char *clean, const char *base)
{
    struct xpool *p = c->pool;

    if (p == NULL)
        return 0;
    /* A set-group-ID directory changes the group of files created in it after; one its owner
     * may not write to refuses them to a caller without CAP_DAC_OVERRIDE. */
    if (c->e.type == XT_HARDLINK || strncmp(base, ".wh.", 4) == 0 || p->set_n >= XPOOL_SET_MAX ||
        (c->e.type == XT_DIR && ((c->e.mode & S_ISGID) || !(c->e.mode & S_IWUSR))) ||
        queued(p, clean))
        return xpool_drain(c);
    return 0;
}

int xpool_file(struct xctx *c, int dirfd, const char *name, bool fast)
{
    struct xjob j = {.dirfd = -1};
    struct xpool *p;
    size_t got = 0;
    int rc;

    if (c->no_pool || (c->flags & PYCRIO_EXTRACT_SERIAL) || c->e.size > XPOOL_FILE_MAX ||
        c->e.nxattrs > 0)
        return 0;
    if (c->pool == NULL && ((rc = pool_start(c)) < 0 || c->pool == NULL))
        return rc;
    p = c->pool;
    j.dirfd = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
    j.name = strdup(name);
    j.path = strdup(c->entry != NULL ? c->entry : name);
    j.data = c->e.size > 0 ? malloc(c->e.size) : NULL;
    if (j.dirfd < 0 || j.name == NULL || j.path == NULL || (c->e.size > 0 && j.data == NULL) ||
        set_add(p, c->clean) < 0) {
        rc = j.dirfd < 0 ? errno : ENOMEM;
        job_free(&j);
        return xfail(c, rc, "malloc", "queueing the file");
    }
    while (got < c->e.size) {
        const unsigned char *src;
        long n = xstream_peek(c, &src, c->e.size - got);

        if (n < 0) {
            job_free(&j);
            return (int)n;
        }
        if (n == 0) {
            job_free(&j);
            return xfail(c, EIO, "read", "truncated tar stream in file data (%llu bytes missing)",
                         c->e.size - got);
        }
        memcpy(j.data + got, src, (size_t)n);
        xstream_consume(&c->s, (size_t)n);
        got += (size_t)n;
    }
    c->data_left = 0;
    j.size = got;
    j.uid = c->e.uid, j.gid = c->e.gid, j.mode = c->e.mode, j.fast = fast;
    j.mtime = c->e.mtime;
    pthread_mutex_lock(&p->mu);
    while (p->count == XPOOL_QUEUE)
        pthread_cond_wait(&p->has_room, &p->mu);
    p->queue[(p->head + p->count) % XPOOL_QUEUE] = j;
    p->count++;
    pthread_cond_signal(&p->has_work);
    rc = p->err_errno;
    pthread_mutex_unlock(&p->mu);
    if (rc != 0)
        return xpool_drain(c); /* a worker failed: report it now */
    return 1;
}
