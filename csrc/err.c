/* err.c: the one place that fills a struct pycrio_err. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal/err_set.h"

static void copy_bounded(char *dst, size_t size, const char *src)
{
    if (src == NULL)
        src = "";
    snprintf(dst, size, "%s", src);
}

int pycrio_err_set(struct pycrio_err *err, int errnum, const char *step, const char *path,
                   const char *fmt, ...)
{
    if (errnum <= 0)
        errnum = EIO; /* a failure must never look like success */
    if (err != NULL) {
        va_list ap;

        err->errnum = errnum;
        copy_bounded(err->step, sizeof(err->step), step);
        copy_bounded(err->path, sizeof(err->path), path);
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return -errnum;
}
