/* monitor.h: pycrio-monitor's private interface: the one context struct and each file's entry
 * points.
 *
 * pycrio-monitor is a single-threaded executable (docs/monitor.md); it is not linked into the
 * daemon and not fed to cffi.  There are no globals: every function takes the context, which
 * main() keeps on its stack.  Signals arrive through a signalfd, so no code runs in a handler.
 * Functions that can fail during setup return 0 or -errno and fill m->errmsg (mon_fail).
 *
 * Files: main.c (flags, detaching, setup), loop.c (epoll), spawn.c (runtime create),
 * stdio.c (container stdio, pty), log.c (CRI log file), ctl.c (control socket),
 * attach.c (attach socket: output fan-out, stdin), exit.c (reaping, exit file), oom.c (OOM kills),
 * sync.c (sync-fd messages), util.c.
 */
#ifndef PYCRIO_MONITOR_H
#define PYCRIO_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#define MON_READ_BUF (16 * 1024) /* one read of container output; longer lines become P pieces */
#define MON_ERRBUF 4096          /* the runtime's stderr kept for the sync error (its last bytes) */
#define MON_ERRMSG 1024
#define MON_MAX_CTL 4 /* control connections served at once */
#define MON_MAX_RUNTIME_ARGS 16
#define MON_EARLY_MAX 8   /* children reaped before the container pid was known */
#define MON_DRAIN_MS 1000 /* after the container exits: wait this long at most for stdio EOF */
#define MON_LOG_IOV 256   /* iovecs per writev of log lines */
#define MON_SUN_PATH 108
#define MON_MAX_ATTACH 16           /* attach connections served at once */
#define MON_STDIN_BUF (8 * 1024)    /* attach input on its way to the container's stdin */
#define MON_ATTACH_SNDBUF (1 << 20) /* asked for each attach connection; the kernel caps it */

enum mon_phase {
    PHASE_CREATING, /* runtime create running: container output is the runtime's own */
    PHASE_RUNNING,  /* container created (maybe started): output goes to the log */
    PHASE_DRAINING, /* container exited: read what is left, then write the exit file */
    PHASE_DONE,
};

enum mon_stream { STREAM_STDOUT, STREAM_STDERR, STREAM_COUNT };

/* epoll tags: kind in the high 32 bits of epoll_data.u64, index in the low ones. */
enum mon_tag {
    TAG_SIGNAL = 1,
    TAG_STDIO,
    TAG_RUNTIME_OUT,
    TAG_CTL_LISTEN,
    TAG_CTL_CONN,
    TAG_OOM,
    TAG_ATTACH_LISTEN,
    TAG_ATTACH_CONN,
    TAG_STDIN,
};

struct mon_args {
    const char *id;
    const char *runtime;
    const char *runtime_root;
    const char *runtime_args[MON_MAX_RUNTIME_ARGS];
    int n_runtime_args;
    const char *bundle;
    const char *pid_file;
    const char *log_path; /* NULL: output is read and discarded */
    const char *exit_file;
    const char *ctl_socket;
    const char *cgroup_oom_dir; /* NULL: no OOM detection */
    long long log_max_size;     /* 0: unlimited */
    int sync_fd;
    bool terminal;
    bool stdin_open;
    bool stdin_once; /* the first attach input session that ends closes stdin */
};

struct mon_log {
    int fd;           /* O_APPEND|O_NONBLOCK, or -1 (no log path, or open failed after reopen) */
    long long size;   /* bytes in the file as far as this monitor knows */
    int last_errno;   /* the last write error reported, so one failure is not reported per line */
    time_t ts_sec;    /* the second that ts_base was formatted for */
    char ts_base[48]; /* "YYYY-MM-DDTHH:MM:SS." */
    char ts_zone[16]; /* "Z" or "+hh:mm" */
};

struct mon_stdio {
    int out[STREAM_COUNT];  /* read ends (tty: out[STDOUT] is the pty master, out[STDERR] -1) */
    bool eof[STREAM_COUNT]; /* true also for an unused stream */
    int stdin_w;            /* --stdin: write end kept for attach (tty: a dup of the master) */
    int child[3];           /* the container's ends, closed once the runtime has them */
    int runtime_out;        /* tty mode: the runtime's own stdout+stderr pipe (read end) */
    int console_listen;     /* tty mode: the --console-socket listener */
    char console_path[MON_SUN_PATH];
};

struct mon_ctl {
    int listen_fd;
    int conns[MON_MAX_CTL];
    bool bound; /* the socket file is ours to unlink */
};

struct mon_attach_conn {
    int fd;
    uint32_t remaining; /* payload bytes left of the stdin frame being read */
    uint8_t hdr[5];     /* a frame header being read */
    uint8_t hdr_len;
    bool input;       /* sent a stdin frame: its end is an input session's end */
    bool input_ended; /* sent close-stdin, or its end of input (EOF) */
    bool readable;    /* epoll said readable (edge-triggered); not yet read to EAGAIN */
    bool hup;         /* the peer closed: drop it once its input is read */
};

struct mon_attach {
    int listen_fd;
    bool bound;         /* the socket file is ours to unlink */
    bool stdin_polled;  /* stdin_w is in the epoll set for EPOLLOUT */
    bool stdin_closing; /* --stdin-once: close stdin once in[] is written */
    bool stdin_done;    /* stdin closed (--stdin-once) or broken: input is discarded */
    char path[MON_SUN_PATH];
    struct mon_attach_conn conns[MON_MAX_ATTACH];
    size_t in_len, in_off; /* in[in_off..in_len) waits for the container's stdin */
    char in[MON_STDIN_BUF];
};

struct mon_oom {
    int event_fd;   /* cgroup v1: eventfd registered on memory.oom_control */
    int counter_fd; /* memory.oom_control (v1) or memory.events (v2), read for "oom_kill N" */
    long long base; /* oom_kill when the container was created */
    bool fired;     /* the v1 eventfd fired */
};

struct mon_early {
    pid_t pid;
    int status;
};

struct monitor {
    struct mon_args args;
    enum mon_phase phase;
    int epfd;
    int sigfd;
    struct mon_log log;
    struct mon_stdio io;
    struct mon_ctl ctl;
    struct mon_attach attach;
    struct mon_oom oom;
    pid_t self;
    pid_t runtime_pid;
    pid_t container_pid;
    int container_status;
    int64_t finished_ns;
    struct mon_early early[MON_EARLY_MAX];
    int n_early;
    int64_t drain_deadline_ms; /* CLOCK_MONOTONIC */
    bool interrupted;          /* SIGTERM/SIGINT while the runtime was creating */
    int rc;                    /* the monitor's exit status: 0 exit file written, 1 otherwise */
    char errbuf[MON_ERRBUF];   /* the runtime's output during create */
    size_t errlen;
    char errmsg[MON_ERRMSG]; /* the last setup failure, for the sync error */
    char buf[MON_READ_BUF];
};

/* util.c */
int mon_fail(struct monitor *m, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mon_warn(struct monitor *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int mon_write_all(int fd, const void *data, size_t len);
ssize_t mon_read_small(int fd, char *buf, size_t size); /* pread from 0, NUL-terminated */
int64_t mon_now_ns(clockid_t clock);
void mon_close(int *fd);
int mon_path_join(char *out, size_t size, const char *dir, const char *name);
int mon_listen_unix(struct monitor *m, const char *path, int type, int backlog, int *fd_out);

/* loop.c */
int mon_epoll_add(struct monitor *m, int fd, enum mon_tag tag, uint32_t index);
int mon_epoll_add_events(struct monitor *m, int fd, uint32_t events, enum mon_tag tag,
                         uint32_t index);
void mon_epoll_del(struct monitor *m, int fd);
int mon_loop(struct monitor *m);

/* spawn.c */
int mon_spawn_runtime(struct monitor *m);
void mon_on_runtime_exit(struct monitor *m, int status);
void mon_kill_children(struct monitor *m);

/* stdio.c */
int mon_stdio_setup(struct monitor *m);
void mon_stdio_after_spawn(struct monitor *m);
int mon_stdio_receive_console(struct monitor *m);
void mon_stdio_on_readable(struct monitor *m, enum mon_stream s);
void mon_stdio_capture_runtime(struct monitor *m, int fd);
int mon_stdio_resize(struct monitor *m, unsigned rows, unsigned cols);
bool mon_stdio_all_eof(const struct monitor *m);
void mon_stdio_close(struct monitor *m);

/* log.c */
int mon_log_open(struct monitor *m);
int mon_log_reopen(struct monitor *m);
void mon_log_write(struct monitor *m, enum mon_stream s, const char *data, size_t len);
void mon_log_close(struct monitor *m);

/* ctl.c */
int mon_ctl_listen(struct monitor *m);
void mon_ctl_on_accept(struct monitor *m);
void mon_ctl_on_message(struct monitor *m, uint32_t index);
void mon_ctl_close(struct monitor *m);

/* attach.c */
int mon_attach_listen(struct monitor *m);
void mon_attach_on_accept(struct monitor *m);
void mon_attach_on_event(struct monitor *m, uint32_t index, uint32_t events);
void mon_attach_on_stdin_writable(struct monitor *m);
void mon_attach_stdin_ready(struct monitor *m);
void mon_attach_output(struct monitor *m, enum mon_stream s, const char *data, size_t len);
void mon_attach_close(struct monitor *m);

/* exit.c */
void mon_reap(struct monitor *m);
void mon_container_known(struct monitor *m);
int mon_write_exit_file(struct monitor *m);

/* oom.c */
void mon_oom_register(struct monitor *m);
void mon_oom_on_event(struct monitor *m);
bool mon_oom_killed(struct monitor *m);
void mon_oom_close(struct monitor *m);

/* sync.c */
int mon_sync_monitor_pid(int fd, pid_t pid);
void mon_sync_pid(struct monitor *m, pid_t pid);
void mon_sync_error(struct monitor *m, const char *stage, int exit_code, const char *msg,
                    size_t len);

#endif
