/* extract_decompress.c: gzip and zstd decoders behind one step function (xcodec_run).
 *
 * gzip: ISA-L igzip (built with -DPYCRIO_HAVE_ISAL) or zlib, members may be concatenated; each
 * member's CRC-32 and ISIZE are checked by the library.  zstd: streaming, several frames
 * allowed.  The stream must end exactly at a member/frame end at in_fd's EOF: a truncated
 * stream is EIO, corrupt data or bytes after the end that are not another member EBADMSG.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>
#include <zstd.h>
#ifdef PYCRIO_HAVE_ISAL
#include <isa-l.h>
#endif

#include "internal/err_set.h"
#include "internal/extract.h"

enum codec_kind { GZIP_ISAL, GZIP_ZLIB, ZSTD };

struct xcodec {
    enum codec_kind kind;
    bool member_end;  /* gzip: the previous member ended; the next bytes must start another */
    size_t zstd_last; /* zstd: the last hint; 0 means at a frame boundary */
    bool zlib_ready;
    z_stream z;
    ZSTD_DStream *zstd;
#ifdef PYCRIO_HAVE_ISAL
    struct inflate_state *isal;
#endif
};

bool xcodec_have_isal(void)
{
#ifdef PYCRIO_HAVE_ISAL
    return true;
#else
    return false;
#endif
}

int xcodec_new(struct xctx *c, int compression, bool no_isal, struct xcodec **out)
{
    struct xcodec *x = calloc(1, sizeof(*x));

    if (x == NULL)
        return xfail(c, ENOMEM, "malloc", "allocating a decoder");
    *out = x;
    if (compression == PYCRIO_COMPRESSION_ZSTD) {
        x->kind = ZSTD;
        x->zstd_last = 1;
        x->zstd = ZSTD_createDStream();
        if (x->zstd == NULL)
            return xfail(c, ENOMEM, "zstd", "allocating a zstd decoder");
        ZSTD_initDStream(x->zstd);
        return 0;
    }
    if (compression != PYCRIO_COMPRESSION_GZIP)
        return xfail(c, EINVAL, "decompress", "unknown compression %d", compression);
#ifdef PYCRIO_HAVE_ISAL
    if (!no_isal) {
        x->kind = GZIP_ISAL;
        x->isal = malloc(sizeof(*x->isal));
        if (x->isal == NULL)
            return xfail(c, ENOMEM, "malloc", "allocating an ISA-L decoder");
        isal_inflate_init(x->isal);
        x->isal->crc_flag = ISAL_GZIP;
        return 0;
    }
#endif
    (void)no_isal;
    x->kind = GZIP_ZLIB;
    if (inflateInit2(&x->z, 15 + 16) != Z_OK) /* gzip wrapper only */
        return xfail(c, ENOMEM, "zlib", "inflateInit2 failed");
    x->zlib_ready = true;
    return 0;
}

void xcodec_free(struct xcodec *x)
{
    if (x == NULL)
        return;
    if (x->zlib_ready)
        inflateEnd(&x->z);
    ZSTD_freeDStream(x->zstd);
#ifdef PYCRIO_HAVE_ISAL
    free(x->isal);
#endif
    free(x);
}

#define NEW_MEMBER 100

/* After a gzip member: the end of the input, or the magic of another member.  Returns
 * NEW_MEMBER when another member starts, XC_END, XC_NEED_INPUT or -errno. */
static int gzip_next_member(struct xctx *c)
{
    struct xstream *s = &c->s;
    size_t avail = s->in_end - s->in_pos;
    const unsigned char *b = s->inbuf + s->in_pos;

    if (avail == 0)
        return s->in_eof ? XC_END : XC_NEED_INPUT;
    if (avail < 2 && !s->in_eof)
        return XC_NEED_INPUT;
    if (avail < 2 || b[0] != 0x1f || b[1] != 0x8b)
        return xfail(c, EBADMSG, "gzip",
                     "gzip: %zu%s bytes of trailing data after the end of the compressed stream",
                     avail, s->in_eof ? "" : "+");
    return NEW_MEMBER;
}

/* No output and no input consumed: more input, or a truncated stream at EOF. */
static int stalled(struct xctx *c, const char *what)
{
    if (c->s.in_eof)
        return xfail(c, EIO, what, "%s: truncated compressed stream (unexpected end of input)",
                     what);
    return XC_NEED_INPUT;
}

#ifdef PYCRIO_HAVE_ISAL
static int run_isal(struct xctx *c, struct xcodec *x, unsigned char *dst, size_t cap,
                    size_t *produced)
{
    struct xstream *s = &c->s;
    struct inflate_state *st = x->isal;
    size_t avail = s->in_end - s->in_pos;
    size_t consumed;
    int ret;

    st->next_in = s->inbuf + s->in_pos;
    st->avail_in = (uint32_t)avail;
    st->next_out = dst;
    st->avail_out = (uint32_t)cap;
    ret = isal_inflate(st);
    consumed = avail - st->avail_in;
    s->in_pos += consumed;
    *produced = cap - st->avail_out;
    if (ret == ISAL_INCORRECT_CHECKSUM)
        return xfail(c, EBADMSG, "gzip", "gzip: CRC-32 or length mismatch in a member trailer");
    if (ret < 0)
        return xfail(c, EBADMSG, "gzip", "gzip: invalid compressed data (isa-l error %d)", ret);
    if (st->block_state == ISAL_BLOCK_FINISH) {
        x->member_end = true;
        return XC_PROGRESS;
    }
    if (*produced == 0 && consumed == 0)
        return stalled(c, "gzip");
    return XC_PROGRESS;
}
#endif

static int run_zlib(struct xctx *c, struct xcodec *x, unsigned char *dst, size_t cap,
                    size_t *produced)
{
    struct xstream *s = &c->s;
    size_t avail = s->in_end - s->in_pos;
    size_t consumed;
    int ret;

    x->z.next_in = s->inbuf + s->in_pos;
    x->z.avail_in = (uInt)avail;
    x->z.next_out = dst;
    x->z.avail_out = (uInt)cap;
    ret = inflate(&x->z, Z_NO_FLUSH);
    consumed = avail - x->z.avail_in;
    s->in_pos += consumed;
    *produced = cap - x->z.avail_out;
    if (ret == Z_STREAM_END) {
        x->member_end = true;
        return XC_PROGRESS;
    }
    if (ret == Z_MEM_ERROR)
        return xfail(c, ENOMEM, "gzip", "gzip: zlib is out of memory");
    if (ret == Z_DATA_ERROR || ret == Z_NEED_DICT || ret == Z_STREAM_ERROR)
        return xfail(c, EBADMSG, "gzip", "gzip: invalid compressed data (zlib: %s)",
                     x->z.msg != NULL ? x->z.msg : "error");
    if (*produced == 0 && consumed == 0)
        return stalled(c, "gzip");
    return XC_PROGRESS;
}

static int run_gzip(struct xctx *c, struct xcodec *x, unsigned char *dst, size_t cap,
                    size_t *produced)
{
    if (x->member_end) {
        int rc = gzip_next_member(c);

        if (rc != NEW_MEMBER)
            return rc;
        x->member_end = false;
#ifdef PYCRIO_HAVE_ISAL
        if (x->kind == GZIP_ISAL) {
            isal_inflate_reset(x->isal);
            x->isal->crc_flag = ISAL_GZIP;
        }
#endif
        if (x->kind == GZIP_ZLIB && inflateReset(&x->z) != Z_OK)
            return xfail(c, EIO, "gzip", "gzip: inflateReset failed");
    }
#ifdef PYCRIO_HAVE_ISAL
    if (x->kind == GZIP_ISAL)
        return run_isal(c, x, dst, cap, produced);
#endif
    return run_zlib(c, x, dst, cap, produced);
}

static int run_zstd(struct xctx *c, struct xcodec *x, unsigned char *dst, size_t cap,
                    size_t *produced)
{
    struct xstream *s = &c->s;
    ZSTD_inBuffer in = {s->inbuf + s->in_pos, s->in_end - s->in_pos, 0};
    ZSTD_outBuffer out = {dst, cap, 0};
    size_t ret = ZSTD_decompressStream(x->zstd, &out, &in);

    if (ZSTD_isError(ret))
        return xfail(c, EBADMSG, "zstd", "zstd: %s%s", ZSTD_getErrorName(ret),
                     x->zstd_last == 0 ? " (data after the end of a frame)" : "");
    s->in_pos += in.pos;
    *produced = out.pos;
    if (out.pos > 0 || in.pos > 0) {
        x->zstd_last = ret;
        return XC_PROGRESS;
    }
    if (x->zstd_last == 0 && s->in_pos == s->in_end)
        return s->in_eof ? XC_END : XC_NEED_INPUT;
    return stalled(c, "zstd");
}

int xcodec_run(struct xctx *c, struct xcodec *x, unsigned char *dst, size_t cap, size_t *produced)
{
    *produced = 0;
    if (x->kind == ZSTD)
        return run_zstd(c, x, dst, cap, produced);
    return run_gzip(c, x, dst, cap, produced);
}
