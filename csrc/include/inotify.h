/* inotify.h: inotify(7) for the daemon's exit watcher (pycrio/exits.py); Python's os lacks it.
 * The descriptor belongs to the caller (close it with os.close); events are read with os.read
 * and parsed in Python (struct inotify_event: int wd, u32 mask, u32 cookie, u32 len, name). */

/* Event bits, the values of <sys/inotify.h> (checked at compile time in inotify.c). */
#define PYCRIO_IN_CLOSE_WRITE 8
#define PYCRIO_IN_MOVED_FROM 64
#define PYCRIO_IN_MOVED_TO 128
#define PYCRIO_IN_CREATE 256
#define PYCRIO_IN_DELETE 512
#define PYCRIO_IN_DELETE_SELF 1024
#define PYCRIO_IN_Q_OVERFLOW 16384
#define PYCRIO_IN_IGNORED 32768
#define PYCRIO_IN_ONLYDIR 16777216
#define PYCRIO_IN_ISDIR 1073741824

/* A new inotify descriptor, non-blocking and close-on-exec: the fd (>= 0) or -errno. */
int pycrio_inotify_init(struct pycrio_err *err);
/* Watch `path` for `mask` (PYCRIO_IN_*) on inotify descriptor fd: the watch descriptor or -errno.
 */
int pycrio_inotify_add_watch(int fd, const char *path, unsigned int mask, struct pycrio_err *err);
/* Remove watch wd from fd: 0 or -errno. */
int pycrio_inotify_rm_watch(int fd, int wd, struct pycrio_err *err);
