/* memory.c: hand freed heap memory back to the kernel.
 *
 * glibc keeps what is freed below the top of each arena; after a burst of work (a pull, pods
 * starting) the daemon's RSS would stay at the burst's high-water mark. */
#include <malloc.h>

#include "include/memory.h"

int pycrio_heap_trim(void)
{
    return malloc_trim(0) ? 1 : 0;
}
