/* memory.h: the daemon's own heap. */

/* Return the free memory of every malloc arena to the kernel (malloc_trim(0)): 1 when some
 * was released, 0 when there was none to release. */
int pycrio_heap_trim(void);
