/* extract.h (internal): the context shared by csrc/extract*.c, one per pycrio_extract_layer call.
 *
 *   extract.c             driver: entry loop, deferred directory times, stats, errors
 *   extract_stream.c      reading in_fd (EINTR, short reads, tee, sha256) and the tar byte stream
 *   extract_decompress.c  gzip (ISA-L or zlib) and zstd decoders, end-of-stream checks
 *   extract_tar.c         tar headers: ustar, GNU long names, PAX records, numbers
 *   extract_path.c        lexical cleaning and resolution beneath the root (openat2, fallback)
 *   extract_entry.c       creating and replacing entries, ownership, modes, times, xattrs
 *   extract_whiteout.c    OCI whiteouts and opaque directories
 *   extract_discard.c     the decoder alone, output discarded (its speed, a stream's validity)
 *   extract_pool.c        small regular files written by worker threads, in the tar's order
 *
 * Nothing here is global: all state hangs off struct xctx, owned by the calling thread (the
 * pool's workers see only their jobs).
 */
#ifndef PYCRIO_INTERNAL_EXTRACT_H
#define PYCRIO_INTERNAL_EXTRACT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <openssl/evp.h>

#include "err_set.h" /* includes err.h, which has no include guard */
#include "../include/extract.h"

#define XBUF_SIZE (1u << 20)   /* input and output buffers */
#define XMETA_MAX (1u << 20)   /* cap of a PAX ('x', 'g') record block */
#define XXATTRS_MAX 1024       /* xattrs per entry */
#define XLINKS_MAX 40          /* symlinks followed in one resolution (as the kernel) */
#define XSIZE_MAX (1ull << 44) /* 16 TiB: the largest file size accepted */
#define XCACHE_SLOTS 8         /* parent directories kept open */

/* ---- extract_stream.c / extract_decompress.c ---- */

struct xcodec;

struct xstream {
    int in_fd, tee_fd;
    unsigned char *inbuf; /* XBUF_SIZE */
    size_t in_pos, in_end;
    bool in_eof;
    unsigned long long in_total;
    EVP_MD_CTX *in_sha;

    int compression;          /* PYCRIO_COMPRESSION_NONE/GZIP/ZSTD once known */
    struct xcodec *codec;     /* NULL for an uncompressed tar */
    unsigned char *outbuf;    /* XBUF_SIZE, owned; unused when plain */
    const unsigned char *out; /* current window: outbuf, or inbuf when plain */
    size_t out_pos, out_end;
    bool out_eof; /* the tar stream ended and the compressed stream was verified complete */
    unsigned long long out_total;
    EVP_MD_CTX *out_sha; /* NULL when plain: the two digests are the same */
    bool no_digests;     /* set before xstream_open: neither digest is computed (discard only) */
};

/* ---- extract_tar.c ---- */

struct xattr_kv {
    const char *name;
    const unsigned char *value;
    size_t len;
};

enum xtype { XT_FILE, XT_HARDLINK, XT_SYMLINK, XT_CHAR, XT_BLOCK, XT_DIR, XT_FIFO };

struct xentry {
    enum xtype type;
    const char *name;     /* the tar path, as the archive has it */
    const char *linkname; /* symlink target or hard link target */
    unsigned long long size;
    unsigned int mode; /* permission bits incl. setuid/setgid/sticky */
    unsigned int uid, gid;
    unsigned int devmajor, devminor;
    struct timespec mtime;
    size_t nxattrs;
    struct xattr_kv xattrs[XXATTRS_MAX];
    char hdrname[256 + 2]; /* ustar prefix "/" name */
    char hdrlink[100 + 1];
};

struct xtar {
    char *pax; /* the pending 'x' record block (values point into it), XMETA_MAX + 1 */
    char *longname, *longlink; /* pending GNU 'L' and 'K', PATH_MAX each */
    bool have_longname, have_longlink;
    /* overrides from the pending 'x' block */
    const char *pax_path, *pax_linkpath;
    bool has_size, has_mtime, has_uid, has_gid;
    unsigned long long size, uid, gid;
    struct timespec mtime;
};

/* ---- extract.c ---- */

struct xdirtime {
    char *path; /* cleaned path; "" is the root */
    struct timespec mtime;
};

struct xparent {
    int fd; /* O_PATH, or -1 */
    bool valid;
    unsigned long used; /* LRU stamp */
    char path[PATH_MAX];
};

struct xctx {
    int root_fd; /* O_PATH of dest_dir */
    int flags;   /* PYCRIO_EXTRACT_* */
    bool use_openat2;
    struct xparent cache[XCACHE_SLOTS]; /* recently resolved parent directories */
    unsigned long cache_clock;
    struct xstream s;
    struct xtar t;
    struct xentry e;
    unsigned long long data_left; /* data bytes of the current entry not yet consumed */
    char clean[PATH_MAX];         /* the current entry's cleaned path */
    struct xdirtime *dirtimes;
    size_t ndirtimes, dirtimes_cap;
    struct pycrio_extract_stats *stats;
    struct pycrio_err *err;
    const char *entry; /* tar path of the entry being extracted, for messages; NULL if none */
    /* The fast path for plain root:root files (xentry_fast_init): */
    int umask;          /* the process's umask; -1: unknown, no fast path */
    bool root_owner;    /* files are created root:root (euid and egid 0) */
    bool sgid_dirs;     /* a set-group-ID directory is in the tree: new files may get its group */
    struct xpool *pool; /* started at the first small file; NULL before, or with no_pool */
    bool no_pool;       /* no worker thread could be started: every file is written here */
};

/* Fill c->err naming the current entry; returns -errnum. */
int xfail(struct xctx *c, int errnum, const char *step, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* xfail for a failed syscall: appends strerror(errnum). */
int xfail_sys(struct xctx *c, int errnum, const char *step, const char *what);

/* ---- extract_stream.c ---- */
/* The large per-extraction buffers come straight from mmap and go back at the end: malloc
 * would keep them in the (per-thread) arena after free, resident in the daemon for good. */
void *xbig_alloc(size_t size);
void xbig_free(void *p, size_t size);
/* The arguments every entry point takes: in_fd, compression, flags (unknown_flags: the bits
 * the caller does not know), stats; EINVAL naming step otherwise. */
int xstream_check_args(struct xctx *c, const char *step, int in_fd, int compression,
                       int unknown_flags, const struct pycrio_extract_stats *stats);
int xstream_open(struct xctx *c, int in_fd, int tee_fd, int compression, bool no_isal);
void xstream_close(struct xstream *s);
/* Read more of in_fd into inbuf (hash, tee); returns bytes read, 0 at EOF, or -errno. */
int xstream_fill_input(struct xctx *c);
/* Point *p at 1..max bytes of the tar stream; returns that count, 0 at its end, or -errno. */
long xstream_peek(struct xctx *c, const unsigned char **p, size_t max);
void xstream_consume(struct xstream *s, size_t n);
/* Read a 512-byte block; returns 1, 0 at the end of the stream (nothing read), or -errno. */
int xstream_block(struct xctx *c, unsigned char *blk);
int xstream_read(struct xctx *c, void *dst, size_t n, const char *what);
int xstream_skip(struct xctx *c, unsigned long long n, const char *what);
/* Consume the rest of the stream up to its verified end; 0 or -errno. */
int xstream_drain(struct xctx *c);
/* Consume the rest of the tar stream, verify the compressed end, fill the stats. */
int xstream_finish(struct xctx *c);

/* ---- extract_decompress.c ---- */
enum { XC_PROGRESS = 0, XC_NEED_INPUT = 1, XC_END = 2 };
int xcodec_new(struct xctx *c, int compression, bool no_isal, struct xcodec **out);
void xcodec_free(struct xcodec *codec);
/* Decode from s->inbuf[in_pos, in_end) into dst; *produced bytes.  Returns XC_* or -errno. */
int xcodec_run(struct xctx *c, struct xcodec *codec, unsigned char *dst, size_t cap,
               size_t *produced);
bool xcodec_have_isal(void);

/* ---- extract_tar.c ---- */
/* Parse the next entry (after any PAX/GNU meta headers) into c->e.  1, 0 at the end of the
 * archive, or -errno. */
int xtar_next(struct xctx *c);
void xtar_free(struct xtar *t);

/* ---- extract_path.c ---- */
/* Clean a tar path lexically beneath "/" into out ("" is the root); no "." or ".." remain. */
int xpath_clean(struct xctx *c, const char *name, char *out, size_t size);
/* Split a cleaned path: *base points at its last component; parent gets the rest. */
void xpath_split(const char *path, char *parent, const char **base);
/* The directory at cleaned path beneath the root: O_PATH fd owned by the cache (do not
 * close), creating missing directories (0755) when create.  -errno on failure. */
int xpath_parent(struct xctx *c, const char *parent, bool create);
/* An O_PATH fd for directory `path` beneath the root, caller-owned, or -errno (no xfail). */
int xpath_resolve_dir(struct xctx *c, const char *path);
/* Forget the cached parents after anything was removed (fds stay open until replaced). */
void xpath_invalidate(struct xctx *c);

/* ---- extract_entry.c ---- */
/* Learn what the fast path for plain root:root files needs (umask, ids, the root's mode). */
void xentry_fast_init(struct xctx *c);
int xentry_extract(struct xctx *c);
/* Make room for a new non-directory at (dirfd, name): remove what is there.  0 or -errno. */
int xentry_remove(struct xctx *c, int dirfd, const char *name);
int xentry_chown_nofollow(struct xctx *c, int dirfd, const char *name, unsigned int uid,
                          unsigned int gid);

/* Remove what is at (dirfd, name) without draining the pool (the drain itself replaces). */
int xentry_remove_now(struct xctx *c, int dirfd, const char *name);

/* ---- extract_pool.c ---- */
#define XPOOL_FILE_MAX (64u * 1024u) /* larger files, and files with xattrs, are written here */
struct xpool;
/* Queue the current entry, a regular file, for a worker: its data is read from the stream now.
 * 1 when queued, 0 when the caller writes it (too large, xattrs, PYCRIO_EXTRACT_SERIAL), or
 * -errno (a worker's earlier failure is reported here too). */
int xpool_file(struct xctx *c, int dirfd, const char *name, bool fast);
/* Before the entry at cleaned path clean (last component base) is made: drain when it could
 * see or replace a queued file.  0 or -errno. */
int xpool_before(struct xctx *c, const char *clean, const char *base);
/* Wait until every queued file is written, replace the entries of those whose name was taken,
 * add the written files to the stats.  0 or -errno of the first failure. */
int xpool_drain(struct xctx *c);
void xpool_free(struct xpool *p);

/* ---- extract_whiteout.c ---- */
/* 1 when the entry was a whiteout (handled or skipped), 0 when it is not one, or -errno. */
int xwhiteout_handle(struct xctx *c, int dirfd, const char *base);

#endif
