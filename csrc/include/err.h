/* err.h: the error contract shared by every exported C function.
 *
 * Every exported function returns >= 0 on success or -errno on failure and
 * takes a caller-owned `struct pycrio_err *` as its last argument, which it
 * fills on failure (never on success).  The caller allocates it (Python:
 * ffi.new("struct pycrio_err *")); nothing is freed across the boundary.
 * Fed to cffi's cdef as is: plain declarations only, no guards, no #if.
 */

#define PYCRIO_ERR_STEP_MAX 48
#define PYCRIO_ERR_PATH_MAX 4096
#define PYCRIO_ERR_MSG_MAX 512

struct pycrio_err {
    int errnum;      /* positive errno of the failure */
    char step[48];   /* the failing syscall or step, e.g. "statfs" */
    char path[4096]; /* the path it failed on, "" when none */
    char msg[512];   /* a human sentence with the details */
};
