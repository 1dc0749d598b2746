/* err_set.h: filling a struct pycrio_err (internal to the C sources).
 * Not async-signal-safe (vsnprintf): never call it in a child after fork. */
#ifndef PYCRIO_INTERNAL_ERR_SET_H
#define PYCRIO_INTERNAL_ERR_SET_H

#include "../include/err.h"

/* Fill `err` (when not NULL) and return -errnum, so callers can write
 * `return pycrio_err_set(err, errno, "open", path, "cannot open %s", path);` */
int pycrio_err_set(struct pycrio_err *err, int errnum, const char *step, const char *path,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
