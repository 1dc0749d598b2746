/* extract_stream.c: the layer's bytes, from in_fd to the tar stream.
 *
 * in_fd is read in 1 MiB chunks (short reads and EINTR handled, as from a pipe), every byte is
 * hashed (compressed_digest) and copied to tee_fd; a decoder (extract_decompress.c) turns the
 * input into the tar stream, which is hashed as it is produced (diff_digest) and handed to the
 * tar parser as windows into the output buffer, so file data is written straight from there.
 * SHA-256 is OpenSSL's EVP (libcrypto): a well-kept, hardware-accelerated implementation
 * rather than a hand-written one.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal/err_set.h"
#include "internal/extract.h"
#include "internal/fdio.h"

int xstream_fill_input(struct xctx *c)
{
    struct xstream *s = &c->s;
    ssize_t n;

    if (s->in_eof)
        return 0;
    if (s->in_pos > 0) {
        memmove(s->inbuf, s->inbuf + s->in_pos, s->in_end - s->in_pos);
        s->in_end -= s->in_pos;
        s->in_pos = 0;
    }
    if (s->in_end == XBUF_SIZE)
        return xfail(c, ENOBUFS, "read", "input buffer full without progress");
    do
        n = read(s->in_fd, s->inbuf + s->in_end, XBUF_SIZE - s->in_end);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return xfail_sys(c, errno, "read", "reading the layer");
    if (n == 0) {
        s->in_eof = true;
        return 0;
    }
    if (s->in_sha != NULL && EVP_DigestUpdate(s->in_sha, s->inbuf + s->in_end, (size_t)n) != 1)
        return xfail(c, EIO, "sha256", "hashing the layer failed");
    if (s->tee_fd >= 0) {
        int rc = pycrio_write_all(s->tee_fd, s->inbuf + s->in_end, (size_t)n);

        if (rc < 0)
            return xfail_sys(c, -rc, "write", "writing the layer to tee_fd");
    }
    s->in_end += (size_t)n;
    s->in_total += (unsigned long long)n;
    return (int)n;
}

static EVP_MD_CTX *sha256_new(void)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    if (md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return NULL;
    }
    return md;
}

static int detect(struct xctx *c)
{
    struct xstream *s = &c->s;
    const unsigned char *b = s->inbuf;

    while (s->in_end < 4 && !s->in_eof) {
        int rc = xstream_fill_input(c);

        if (rc < 0)
            return rc;
    }
    if (s->in_end >= 2 && b[0] == 0x1f && b[1] == 0x8b)
        return PYCRIO_COMPRESSION_GZIP;
    if (s->in_end >= 4 && b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd)
        return PYCRIO_COMPRESSION_ZSTD;
    return PYCRIO_COMPRESSION_NONE;
}

void *xbig_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    return p == MAP_FAILED ? NULL : p;
}

void xbig_free(void *p, size_t size)
{
    if (p != NULL)
        munmap(p, size);
}

int xstream_check_args(struct xctx *c, const char *step, int in_fd, int compression,
                       int unknown_flags, const struct pycrio_extract_stats *stats)
{
    if (in_fd < 0 || stats == NULL)
        return xfail(c, EINVAL, step, "invalid input fd %d or no stats", in_fd);
    if (compression < PYCRIO_COMPRESSION_AUTO || compression > PYCRIO_COMPRESSION_ZSTD)
        return xfail(c, EINVAL, step, "unknown compression %d", compression);
    if (unknown_flags)
        return xfail(c, EINVAL, step, "unknown flags 0x%x", (unsigned)unknown_flags);
    return 0;
}

int xstream_open(struct xctx *c, int in_fd, int tee_fd, int compression, bool no_isal)
{
    struct xstream *s = &c->s;

    s->in_fd = in_fd;
    s->tee_fd = tee_fd;
    s->inbuf = xbig_alloc(XBUF_SIZE);
    s->in_sha = s->no_digests ? NULL : sha256_new();
    if (s->inbuf == NULL || (s->in_sha == NULL && !s->no_digests))
        return xfail(c, ENOMEM, "malloc", "allocating the input buffer");
    if (compression == PYCRIO_COMPRESSION_AUTO) {
        compression = detect(c);
        if (compression < 0)
            return compression;
    }
    s->compression = compression;
    if (compression == PYCRIO_COMPRESSION_NONE)
        return 0;
    s->outbuf = xbig_alloc(XBUF_SIZE);
    s->out_sha = s->no_digests ? NULL : sha256_new();
    if (s->outbuf == NULL || (s->out_sha == NULL && !s->no_digests))
        return xfail(c, ENOMEM, "malloc", "allocating the output buffer");
    return xcodec_new(c, compression, no_isal, &s->codec);
}

void xstream_close(struct xstream *s)
{
    xcodec_free(s->codec);
    EVP_MD_CTX_free(s->in_sha);
    EVP_MD_CTX_free(s->out_sha);
    xbig_free(s->inbuf, XBUF_SIZE);
    xbig_free(s->outbuf, XBUF_SIZE);
    memset(s, 0, sizeof(*s));
}

/* Plain tar: the output window is the input buffer itself. */
static long refill_plain(struct xctx *c)
{
    struct xstream *s = &c->s;

    if (s->in_pos == s->in_end) {
        int rc = xstream_fill_input(c);

        if (rc <= 0)
            return rc;
    }
    s->out = s->inbuf;
    s->out_pos = s->in_pos;
    s->out_end = s->in_end;
    s->in_pos = s->in_end; /* handed over: the next fill starts afresh */
    s->out_total += s->out_end - s->out_pos;
    return (long)(s->out_end - s->out_pos);
}

static long refill_decoded(struct xctx *c)
{
    struct xstream *s = &c->s;

    for (;;) {
        size_t produced = 0;
        int rc = xcodec_run(c, s->codec, s->outbuf, XBUF_SIZE, &produced);

        if (rc < 0)
            return rc;
        if (produced > 0) {
            if (s->out_sha != NULL && EVP_DigestUpdate(s->out_sha, s->outbuf, produced) != 1)
                return xfail(c, EIO, "sha256", "hashing the tar stream failed");
            s->out = s->outbuf;
            s->out_pos = 0;
            s->out_end = produced;
            s->out_total += produced;
            return (long)produced;
        }
        if (rc == XC_END)
            return 0;
        if (rc == XC_NEED_INPUT) {
            if (s->in_eof)
                return xfail(c, EIO, "decompress", "decoder stalled at the end of the input");
            rc = xstream_fill_input(c);
            if (rc < 0)
                return rc;
        }
    }
}

long xstream_peek(struct xctx *c, const unsigned char **p, size_t max)
{
    struct xstream *s = &c->s;
    size_t avail;

    if (s->out_pos == s->out_end) {
        long rc;

        if (s->out_eof)
            return 0;
        rc = s->codec != NULL ? refill_decoded(c) : refill_plain(c);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            s->out_eof = true;
            return 0;
        }
    }
    avail = s->out_end - s->out_pos;
    *p = s->out + s->out_pos;
    return (long)(avail < max ? avail : max);
}

void xstream_consume(struct xstream *s, size_t n)
{
    s->out_pos += n;
}

/* Copy n bytes; returns the count copied before the stream ended (short only at its end). */
static long copy_out(struct xctx *c, unsigned char *dst, size_t n)
{
    size_t done = 0;

    while (done < n) {
        const unsigned char *p;
        long got = xstream_peek(c, &p, n - done);

        if (got < 0)
            return got;
        if (got == 0)
            break;
        memcpy(dst + done, p, (size_t)got);
        xstream_consume(&c->s, (size_t)got);
        done += (size_t)got;
    }
    return (long)done;
}

int xstream_block(struct xctx *c, unsigned char *blk)
{
    long got = copy_out(c, blk, 512);

    if (got < 0)
        return (int)got;
    if (got == 0)
        return 0;
    if (got < 512)
        return xfail(c, EIO, "read", "truncated tar stream: %ld bytes of a 512-byte header", got);
    return 1;
}

int xstream_read(struct xctx *c, void *dst, size_t n, const char *what)
{
    long got = copy_out(c, dst, n);

    if (got < 0)
        return (int)got;
    if ((size_t)got < n)
        return xfail(c, EIO, "read", "truncated tar stream in %s (%ld of %zu bytes)", what, got, n);
    return 0;
}

int xstream_skip(struct xctx *c, unsigned long long n, const char *what)
{
    while (n > 0) {
        const unsigned char *p;
        long got = xstream_peek(c, &p, n > XBUF_SIZE ? XBUF_SIZE : (size_t)n);

        if (got < 0)
            return (int)got;
        if (got == 0)
            return xfail(c, EIO, "read", "truncated tar stream in %s (%llu bytes missing)", what,
                         n);
        xstream_consume(&c->s, (size_t)got);
        n -= (unsigned long long)got;
    }
    return 0;
}

static int digest_hex(struct xctx *c, EVP_MD_CTX *md, char *out)
{
    unsigned char sum[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    static const char hex[] = "0123456789abcdef";

    if (EVP_DigestFinal_ex(md, sum, &len) != 1 || len != 32)
        return xfail(c, EIO, "sha256", "finishing a digest failed");
    memcpy(out, "sha256:", 7);
    for (unsigned int i = 0; i < len; i++) {
        out[7 + 2 * i] = hex[sum[i] >> 4];
        out[7 + 2 * i + 1] = hex[sum[i] & 15];
    }
    out[7 + 2 * len] = '\0';
    return 0;
}

int xstream_drain(struct xctx *c)
{
    for (;;) {
        const unsigned char *p;
        long got = xstream_peek(c, &p, XBUF_SIZE);

        if (got <= 0)
            return (int)got;
        xstream_consume(&c->s, (size_t)got);
    }
}

int xstream_finish(struct xctx *c)
{
    struct xstream *s = &c->s;
    struct pycrio_extract_stats *st = c->stats;
    int rc;

    /* Whatever follows the end-of-archive blocks (record padding) is part of the diff. */
    if ((rc = xstream_drain(c)) < 0)
        return rc;
    /* The stream ends only at in_fd's EOF, with the compressed stream verified complete. */
    st->compressed_bytes = s->in_total;
    st->uncompressed_bytes = s->out_total;
    st->compression = s->compression;
    rc = digest_hex(c, s->in_sha, st->compressed_digest);
    if (rc < 0)
        return rc;
    if (s->out_sha == NULL) {
        memcpy(st->diff_digest, st->compressed_digest, sizeof(st->diff_digest));
        return 0;
    }
    return digest_hex(c, s->out_sha, st->diff_digest);
}
