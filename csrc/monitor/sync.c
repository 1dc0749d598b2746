/* sync.c: the JSON lines pycrio-monitor writes to the daemon's --sync-fd (docs/monitor.md).
 *
 *   {"monitor_pid": N}                                  from the first process, before it exits
 *   {"pid": N}                                          runtime create succeeded; N = container pid
 *   {"error": "...", "exit_code": N, "stage": "..."}    create (or the monitor's setup) failed
 *
 * After the last line the fd is closed.  A daemon that went away makes the write fail with EPIPE
 * (SIGPIPE is ignored): the monitor carries on regardless.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "monitor.h"

struct jbuf {
    int fd;
    size_t len;
    char data[512];
};

static void jflush(struct jbuf *b)
{
    if (b->len > 0 && b->fd >= 0)
        (void)mon_write_all(b->fd, b->data, b->len);
    b->len = 0;
}

static void jputs(struct jbuf *b, const char *s, size_t n)
{
    while (n > 0) {
        size_t room = sizeof(b->data) - b->len;
        size_t k = n < room ? n : room;

        memcpy(b->data + b->len, s, k);
        b->len += k;
        s += k;
        n -= k;
        if (b->len == sizeof(b->data))
            jflush(b);
    }
}

/* A JSON string body: quotes, backslashes and control bytes escaped; other bytes as they are. */
static void jescape(struct jbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};

        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
            jputs(b, esc, 2);
        } else if (c == '\n') {
            jputs(b, "\\n", 2);
        } else if (c == '\t') {
            jputs(b, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            jputs(b, esc, 6);
        } else {
            jputs(b, (const char *)&c, 1);
        }
    }
}

static void sync_close(struct monitor *m)
{
    mon_close(&m->args.sync_fd);
}

int mon_sync_monitor_pid(int fd, pid_t pid)
{
    char line[64];
    int n = snprintf(line, sizeof(line), "{\"monitor_pid\": %d}\n", (int)pid);

    return mon_write_all(fd, line, (size_t)n);
}

void mon_sync_pid(struct monitor *m, pid_t pid)
{
    char line[64];
    int n = snprintf(line, sizeof(line), "{\"pid\": %d}\n", (int)pid);

    if (m->args.sync_fd >= 0 && mon_write_all(m->args.sync_fd, line, (size_t)n) < 0)
        mon_warn(m, "cannot write the container pid to the sync fd (the daemon is gone?)");
    sync_close(m);
}

/* stage: "runtime" (the runtime's create failed; msg is its output) or "monitor" (our setup). */
void mon_sync_error(struct monitor *m, const char *stage, int exit_code, const char *msg,
                    size_t len)
{
    struct jbuf b = {.fd = m->args.sync_fd, .len = 0};
    char tail[96];
    int n;

    while (len > 0 && (msg[0] == ' ' || msg[0] == '\n' || msg[0] == '\t' || msg[0] == '\r')) {
        msg++;
        len--;
    }
    while (len > 0 && (msg[len - 1] == ' ' || msg[len - 1] == '\n' || msg[len - 1] == '\t' ||
                       msg[len - 1] == '\r'))
        len--;
    mon_warn(m, "%s failed (exit %d): %.*s", stage, exit_code, (int)len, msg);
    if (b.fd < 0)
        return;
    jputs(&b, "{\"error\": \"", 11);
    jescape(&b, msg, len);
    n = snprintf(tail, sizeof(tail), "\", \"exit_code\": %d, \"stage\": \"%s\"}\n", exit_code,
                 stage);
    jputs(&b, tail, (size_t)n);
    jflush(&b);
    sync_close(m);
}
