/* fuzz_extract.c: libFuzzer target for pycrio_extract_layer (`make fuzz`).
 *
 * Each input is a layer (plain, gzip or zstd: AUTO detection) read from a memfd and extracted
 * into a fresh <top>/dest on /dev/shm; odd-sized inputs use the fallback path resolver.  Any
 * crash, sanitizer report or leak is a finding, and so is an escape: after each run <top> must
 * hold nothing but dest.  Built with clang -fsanitize=fuzzer,address,undefined; not part of
 * the extension module.
 */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal/err_set.h"
#include "include/extract.h"

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) < 0 ? -1 : 0;
}

static void check_no_escape(const char *top)
{
    DIR *d = opendir(top);
    struct dirent *de;

    if (d == NULL)
        abort();
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, "dest")) {
            fprintf(stderr, "ESCAPE: %s/%s was created outside dest\n", top, de->d_name);
            abort();
        }
    }
    closedir(d);
}

static int feed(const uint8_t *data, size_t size)
{
    int fd = memfd_create("layer", MFD_CLOEXEC);

    if (fd < 0)
        abort();
    for (size_t off = 0; off < size;) {
        ssize_t n = write(fd, data + off, size - off);

        if (n < 0)
            abort();
        off += (size_t)n;
    }
    if (lseek(fd, 0, SEEK_SET) < 0)
        abort();
    return fd;
}

static char top[64]; /* the harness's own scratch directory, removed at exit */

static void remove_top(void)
{
    nftw(top, remove_entry, 32, FTW_DEPTH | FTW_PHYS);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char dest[96];
    struct pycrio_extract_stats stats;
    struct pycrio_err err;
    int fd, flags = (size & 1) ? PYCRIO_EXTRACT_NO_OPENAT2 : 0;

    if (top[0] == '\0') {
        snprintf(top, sizeof(top), "/dev/shm/pycrio-fuzz-XXXXXX");
        if (mkdtemp(top) == NULL)
            abort();
        atexit(remove_top);
    }
    snprintf(dest, sizeof(dest), "%s/dest", top);
    if (mkdir(dest, 0755) < 0 && errno != EEXIST)
        abort();
    fd = feed(data, size);
    memset(&err, 0, sizeof(err));
    if (pycrio_extract_layer(fd, -1, dest, PYCRIO_COMPRESSION_AUTO, flags, &stats, &err) < 0 &&
        (err.errnum <= 0 || err.msg[0] == '\0'))
        abort(); /* a failure must say why */
    close(fd);
    check_no_escape(top);
    nftw(dest, remove_entry, 32, FTW_DEPTH | FTW_PHYS);
    return 0;
}
