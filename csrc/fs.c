/* fs.c: filesystem facts (statfs magic) for startup checks. */
#include <errno.h>
#include <string.h>
#include <sys/vfs.h>

#include "internal/err_set.h"
#include "include/fs.h"

long long pycrio_fs_type(const char *path, struct pycrio_err *err)
{
    struct statfs st;

    if (path == NULL || path[0] == '\0')
        return pycrio_err_set(err, EINVAL, "statfs", "", "empty path");
    if (statfs(path, &st) < 0) {
        int saved = errno;

        return pycrio_err_set(err, saved, "statfs", path, "statfs %s: %s", path, strerror(saved));
    }
    /* f_type is a signed long holding an unsigned 32-bit magic. */
    return (long long)(unsigned int)st.f_type;
}
