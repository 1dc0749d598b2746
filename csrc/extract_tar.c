/* extract_tar.c: parsing tar headers into struct xentry.
 *
 * Formats: v7, POSIX ustar (name prefix), GNU ('L' long name, 'K' long link name, base-256
 * numbers) and PAX ('x' per entry: path, linkpath, size, mtime, uid, gid, SCHILY.xattr.*;
 * 'g' global: validated, then ignored, as containerd does).  Every field is bounds-checked:
 * the header checksum (unsigned or signed sum), numbers (octal or base-256, no overflow),
 * sizes (<= XSIZE_MAX, meta records <= XMETA_MAX, names < PATH_MAX) and PAX record lengths.
 * Two zero blocks end the archive, as does one zero block followed by the end of the stream.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal/cleanup.h"
#include "internal/err_set.h"
#include "internal/extract.h"

#define UID_MAX_OK 0xfffffffeull /* (uid_t)-1 means "unchanged" to chown */

static bool is_zero_block(const unsigned char *b)
{
    for (int i = 0; i < 512; i++)
        if (b[i] != 0)
            return false;
    return true;
}

/* A header number: octal digits (optionally space-padded, NUL/space terminated) or GNU
 * base-256 (high bit of the first byte set, two's complement).  0 or -EINVAL/-ERANGE. */
static int parse_number(const unsigned char *f, size_t n, long long *out)
{
    unsigned long long v = 0;
    size_t i = 0;

    if (f[0] & 0x80) {
        unsigned char inv = (f[0] & 0x40) ? 0xff : 0x00;

        for (i = 0; i < n; i++) {
            unsigned char b = f[i] ^ inv;

            if (i == 0)
                b &= 0x7f;
            if (v >> 55)
                return -ERANGE;
            v = (v << 8) | b;
        }
        if (v >> 63)
            return -ERANGE;
        *out = inv ? -(long long)v - 1 : (long long)v;
        return 0;
    }
    while (i < n && f[i] == ' ')
        i++;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
        if (v >> 60)
            return -ERANGE;
        v = v * 8 + (unsigned)(f[i] - '0');
    }
    for (; i < n; i++)
        if (f[i] != ' ' && f[i] != '\0')
            return -EINVAL;
    *out = (long long)v;
    return 0;
}

static int header_number(struct xctx *c, const unsigned char *blk, size_t off, size_t n,
                         long long min, long long max, const char *field, long long *out)
{
    int rc = parse_number(blk + off, n, out);

    if (rc < 0)
        return xfail(c, -rc, "tar header", "invalid %s field in a tar header", field);
    if (*out < min || *out > max)
        return xfail(c, *out < 0 ? EINVAL : EFBIG, "tar header",
                     "%s %lld out of range in a tar header", field, *out);
    return 0;
}

static int check_checksum(struct xctx *c, const unsigned char *blk)
{
    long long stored;
    unsigned long usum = 0;
    long ssum = 0;

    if (parse_number(blk + 148, 8, &stored) < 0 || (blk[148] & 0x80))
        return xfail(c, EINVAL, "tar header", "unreadable tar header checksum (not a tar?)");
    for (int i = 0; i < 512; i++) {
        unsigned char b = (i >= 148 && i < 156) ? ' ' : blk[i];

        usum += b;
        ssum += (signed char)b;
    }
    if ((long long)usum != stored && (long long)ssum != stored)
        return xfail(c, EINVAL, "tar header",
                     "tar header checksum mismatch (stored %llo, computed %lo)",
                     (unsigned long long)stored, usum);
    return 0;
}

static void field_string(char *dst, const unsigned char *f, size_t n)
{
    size_t len = strnlen((const char *)f, n);

    memcpy(dst, f, len);
    dst[len] = '\0';
}

/* Decimal digits only (a PAX value), at most max. */
static int parse_dec(const char *v, unsigned long long max, unsigned long long *out)
{
    unsigned long long x = 0;

    if (*v == '\0')
        return -EINVAL;
    for (; *v; v++) {
        if (*v < '0' || *v > '9')
            return -EINVAL;
        if (x > (max - (unsigned)(*v - '0')) / 10)
            return -ERANGE;
        x = x * 10 + (unsigned)(*v - '0');
    }
    *out = x;
    return 0;
}

/* A PAX time: [-]seconds[.fraction], nanoseconds kept. */
static int parse_pax_time(const char *v, struct timespec *ts)
{
    bool neg = *v == '-';
    unsigned long long sec = 0;
    long nsec = 0;
    int digits = 0;
    const char *dot;
    char secbuf[24];

    if (neg)
        v++;
    dot = strchr(v, '.');
    if ((dot ? (size_t)(dot - v) : strlen(v)) >= sizeof(secbuf))
        return -ERANGE;
    field_string(secbuf, (const unsigned char *)v, dot ? (size_t)(dot - v) : strlen(v));
    if (parse_dec(secbuf, 1ull << 62, &sec) < 0)
        return -EINVAL;
    if (dot != NULL) {
        for (const char *p = dot + 1; *p; p++) {
            if (*p < '0' || *p > '9')
                return -EINVAL;
            if (digits++ < 9)
                nsec = nsec * 10 + (*p - '0');
        }
        for (; digits < 9; digits++)
            nsec *= 10;
    }
    ts->tv_sec = neg ? -(time_t)sec : (time_t)sec;
    ts->tv_nsec = nsec;
    if (neg && nsec > 0) {
        ts->tv_sec -= 1;
        ts->tv_nsec = 1000000000L - nsec;
    }
    return 0;
}

static int pax_string(struct xctx *c, const char *key, const char *v, size_t vlen, const char **out)
{
    if (strlen(v) != vlen)
        return xfail(c, EINVAL, "pax", "PAX %s contains a NUL byte", key);
    if (vlen >= PATH_MAX)
        return xfail(c, ENAMETOOLONG, "pax", "PAX %s of %zu bytes is too long", key, vlen);
    *out = vlen > 0 ? v : NULL;
    return 0;
}

static int pax_number(struct xctx *c, const char *key, const char *v, unsigned long long max,
                      unsigned long long *out, bool *has)
{
    int rc = parse_dec(v, max, out);

    if (rc < 0)
        return xfail(c, -rc, "pax", "invalid PAX %s value '%.32s'", key, v);
    *has = true;
    return 0;
}

static int pax_apply(struct xctx *c, const char *key, const char *v, size_t vlen)
{
    struct xtar *t = &c->t;
    struct xentry *e = &c->e;

    if (strcmp(key, "path") == 0)
        return pax_string(c, key, v, vlen, &t->pax_path);
    if (strcmp(key, "linkpath") == 0)
        return pax_string(c, key, v, vlen, &t->pax_linkpath);
    if (strcmp(key, "size") == 0)
        return pax_number(c, key, v, XSIZE_MAX, &t->size, &t->has_size);
    if (strcmp(key, "uid") == 0)
        return pax_number(c, key, v, UID_MAX_OK, &t->uid, &t->has_uid);
    if (strcmp(key, "gid") == 0)
        return pax_number(c, key, v, UID_MAX_OK, &t->gid, &t->has_gid);
    if (strcmp(key, "mtime") == 0) {
        if (parse_pax_time(v, &t->mtime) < 0)
            return xfail(c, EINVAL, "pax", "invalid PAX mtime '%.32s'", v);
        t->has_mtime = true;
        return 0;
    }
    if (strncmp(key, "GNU.sparse.", 11) == 0)
        return xfail(c, EOPNOTSUPP, "pax", "sparse files are not supported (PAX %s)", key);
    if (strncmp(key, "SCHILY.xattr.", 13) == 0) {
        if (key[13] == '\0')
            return xfail(c, EINVAL, "pax", "PAX xattr record with an empty name");
        if (e->nxattrs == XXATTRS_MAX)
            return xfail(c, E2BIG, "pax", "more than %d xattrs on one entry", XXATTRS_MAX);
        e->xattrs[e->nxattrs++] = (struct xattr_kv){key + 13, (const unsigned char *)v, vlen};
    }
    return 0; /* atime, ctime, uname, gname, comment, charset...: ignored */
}

/* Records "<len> <key>=<value>\n", len counting the whole record in decimal.  Keys and values
 * are NUL-terminated in place.  Global ('g') records are checked and not applied. */
static int pax_parse(struct xctx *c, char *buf, size_t len, bool global)
{
    size_t pos = 0;

    while (pos < len) {
        size_t i = pos, reclen = 0;
        char *key, *eq, *end;
        int rc;

        for (; i < len && buf[i] >= '0' && buf[i] <= '9' && reclen <= len; i++)
            reclen = reclen * 10 + (size_t)(buf[i] - '0');
        if (i == pos || i >= len || buf[i] != ' ' || buf[pos] == '0' || reclen > len - pos ||
            reclen < i - pos + 4)
            return xfail(c, EINVAL, "pax", "malformed PAX record length at offset %zu", pos);
        key = buf + i + 1;
        end = buf + pos + reclen - 1;
        if (*end != '\n')
            return xfail(c, EINVAL, "pax", "PAX record at offset %zu does not end in a newline",
                         pos);
        eq = memchr(key, '=', (size_t)(end - key));
        if (eq == NULL || eq == key || memchr(key, '\0', (size_t)(eq - key)) != NULL)
            return xfail(c, EINVAL, "pax", "malformed PAX record key at offset %zu", pos);
        *eq = '\0';
        *end = '\0';
        pos += reclen;
        if (global)
            continue;
        rc = pax_apply(c, key, eq + 1, (size_t)(end - eq - 1));
        if (rc < 0)
            return rc;
    }
    return 0;
}

static unsigned long long padding(unsigned long long size)
{
    return (512 - size % 512) % 512;
}

/* Read a meta header's data (size bytes, then padding) into buf (room for size + 1). */
static int read_meta(struct xctx *c, char *buf, unsigned long long size, const char *what)
{
    int rc = xstream_read(c, buf, (size_t)size, what);

    if (rc < 0)
        return rc;
    buf[size] = '\0';
    return xstream_skip(c, padding(size), what);
}

static int meta_header(struct xctx *c, char type, unsigned long long size)
{
    struct xtar *t = &c->t;
    cleanup_free char *global = NULL;
    char *buf = type == 'L' ? t->longname : type == 'K' ? t->longlink : t->pax;
    int rc;

    if ((type == 'L' || type == 'K') && size >= PATH_MAX)
        return xfail(c, ENAMETOOLONG, "tar header", "GNU long %s of %llu bytes is too long",
                     type == 'L' ? "name" : "link name", size);
    if ((type == 'x' || type == 'g') && size > XMETA_MAX)
        return xfail(c, EFBIG, "tar header", "PAX header of %llu bytes is over the %u cap", size,
                     XMETA_MAX);
    if (type == 'g') {
        buf = global = malloc((size_t)size + 1);
        if (buf == NULL)
            return xfail(c, ENOMEM, "malloc", "PAX global header");
    }
    if (type == 'x') { /* a second 'x' replaces the first */
        t->pax_path = t->pax_linkpath = NULL;
        t->has_size = t->has_mtime = t->has_uid = t->has_gid = false;
        c->e.nxattrs = 0;
    }
    rc = read_meta(c, buf, size, type == 'L' || type == 'K' ? "a GNU long name" : "a PAX header");
    if (rc < 0)
        return rc;
    if (type == 'L')
        t->have_longname = true;
    else if (type == 'K')
        t->have_longlink = true;
    else
        return pax_parse(c, buf, (size_t)size, type == 'g');
    return 0;
}

static int entry_type(struct xctx *c, char flag, const char *name, enum xtype *type)
{
    size_t len = strlen(name);

    switch (flag) {
    case '\0':
        *type = (len > 0 && name[len - 1] == '/') ? XT_DIR : XT_FILE; /* v7 directories */
        return 0;
    case '0':
    case '7':
        *type = XT_FILE;
        return 0;
    case '1':
        *type = XT_HARDLINK;
        return 0;
    case '2':
        *type = XT_SYMLINK;
        return 0;
    case '3':
        *type = XT_CHAR;
        return 0;
    case '4':
        *type = XT_BLOCK;
        return 0;
    case '5':
        *type = XT_DIR;
        return 0;
    case '6':
        *type = XT_FIFO;
        return 0;
    case 'S':
        return xfail(c, EOPNOTSUPP, "tar header", "sparse files are not supported (type 'S')");
    default:
        return xfail(c, EINVAL, "tar header", "unsupported tar entry type 0x%02x",
                     (unsigned char)flag);
    }
}

static void entry_names(struct xctx *c, const unsigned char *blk)
{
    struct xtar *t = &c->t;
    struct xentry *e = &c->e;
    size_t len = 0;

    field_string(e->hdrlink, blk + 157, 100);
    if (memcmp(blk + 257, "ustar\0", 6) == 0 && blk[345] != '\0') { /* POSIX name prefix */
        len = strnlen((const char *)blk + 345, 155);
        memcpy(e->hdrname, blk + 345, len);
        e->hdrname[len++] = '/';
    }
    field_string(e->hdrname + len, blk, 100);
    e->name = t->pax_path ? t->pax_path : t->have_longname ? t->longname : e->hdrname;
    e->linkname = t->pax_linkpath ? t->pax_linkpath : t->have_longlink ? t->longlink : e->hdrlink;
}

static int entry_numbers(struct xctx *c, const unsigned char *blk)
{
    struct xtar *t = &c->t;
    struct xentry *e = &c->e;
    bool ustar = memcmp(blk + 257, "ustar", 5) == 0;
    long long mode, uid, gid, mtime, major = 0, minor = 0;
    int rc;

    if ((rc = header_number(c, blk, 100, 8, 0, INT64_MAX, "mode", &mode)) < 0 ||
        (rc = header_number(c, blk, 108, 8, 0, UID_MAX_OK, "uid", &uid)) < 0 ||
        (rc = header_number(c, blk, 116, 8, 0, UID_MAX_OK, "gid", &gid)) < 0 ||
        (rc = header_number(c, blk, 136, 12, INT64_MIN, INT64_MAX, "mtime", &mtime)) < 0)
        return rc;
    if (ustar && ((rc = header_number(c, blk, 329, 8, 0, UINT32_MAX, "devmajor", &major)) < 0 ||
                  (rc = header_number(c, blk, 337, 8, 0, UINT32_MAX, "devminor", &minor)) < 0))
        return rc;
    e->mode = (unsigned int)(mode & 07777);
    e->uid = (unsigned int)(t->has_uid ? t->uid : (unsigned long long)uid);
    e->gid = (unsigned int)(t->has_gid ? t->gid : (unsigned long long)gid);
    e->mtime.tv_sec = (time_t)mtime;
    e->mtime.tv_nsec = 0;
    if (t->has_mtime)
        e->mtime = t->mtime;
    e->devmajor = (unsigned int)major;
    e->devminor = (unsigned int)minor;
    if (t->has_size)
        e->size = t->size;
    return 0;
}

static void reset_pending(struct xctx *c)
{
    struct xtar *t = &c->t;

    t->have_longname = t->have_longlink = false;
    t->pax_path = t->pax_linkpath = NULL;
    t->has_size = t->has_mtime = t->has_uid = t->has_gid = false;
    c->e.nxattrs = 0;
    c->entry = NULL;
}

static int end_of_archive(struct xctx *c)
{
    unsigned char blk[512];
    int rc = xstream_block(c, blk);

    if (rc < 0)
        return rc;
    if (rc == 1 && !is_zero_block(blk))
        return xfail(c, EINVAL, "tar header", "a zero block followed by a non-zero block");
    if (c->t.have_longname || c->t.have_longlink || c->t.pax_path != NULL || c->t.has_size)
        return xfail(c, EINVAL, "tar header", "a GNU/PAX header at the end of the archive");
    return 0;
}

static int alloc_buffers(struct xctx *c)
{
    struct xtar *t = &c->t;

    if (t->pax == NULL) {
        t->pax = xbig_alloc(XMETA_MAX + 1);
        t->longname = malloc(PATH_MAX);
        t->longlink = malloc(PATH_MAX);
        if (t->pax == NULL || t->longname == NULL || t->longlink == NULL)
            return xfail(c, ENOMEM, "malloc", "tar parser buffers");
    }
    return 0;
}

int xtar_next(struct xctx *c)
{
    unsigned char blk[512];
    int rc = alloc_buffers(c);

    if (rc < 0)
        return rc;
    reset_pending(c);
    for (;;) {
        long long size;

        rc = xstream_block(c, blk);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return xfail(c, EIO, "read", "truncated tar stream: no end-of-archive blocks");
        if (is_zero_block(blk))
            return end_of_archive(c);
        if ((rc = check_checksum(c, blk)) < 0 ||
            (rc = header_number(c, blk, 124, 12, 0, (long long)XSIZE_MAX, "size", &size)) < 0)
            return rc;
        c->e.size = (unsigned long long)size;
        if (strchr("LKxg", blk[156]) == NULL || blk[156] == '\0')
            break;
        rc = meta_header(c, (char)blk[156], (unsigned long long)size);
        if (rc < 0)
            return rc;
    }
    entry_names(c, blk);
    c->entry = c->e.name;
    if (c->e.name[0] == '\0')
        return xfail(c, EINVAL, "tar header", "tar entry with an empty name");
    if ((rc = entry_type(c, (char)blk[156], c->e.name, &c->e.type)) < 0 ||
        (rc = entry_numbers(c, blk)) < 0)
        return rc;
    c->data_left = c->e.type == XT_FILE ? c->e.size : 0;
    return 1;
}

void xtar_free(struct xtar *t)
{
    xbig_free(t->pax, XMETA_MAX + 1);
    free(t->longname);
    free(t->longlink);
    t->pax = t->longname = t->longlink = NULL;
}
