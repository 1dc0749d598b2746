/* fs.h: filesystem facts the daemon needs and Python's os module lacks. */

/* The f_type magic of the filesystem holding `path` (statfs(2)), >= 0, or -errno. */
long long pycrio_fs_type(const char *path, struct pycrio_err *err);
