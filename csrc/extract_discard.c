/* extract_discard.c: pycrio_decompress_discard, the layer decoder alone: no tar, no digests,
 * nothing written.  The same stream and codec code as pycrio_extract_layer (extract_stream.c,
 * extract_decompress.c), so its speed is the extractor's decoding speed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal/extract.h"

static void discard_free(struct xctx **cp)
{
    if (*cp == NULL)
        return;
    xstream_close(&(*cp)->s);
    free(*cp);
}

int pycrio_decompress_discard(int in_fd, int compression, int flags,
                              struct pycrio_extract_stats *stats, struct pycrio_err *err)
{
    __attribute__((cleanup(discard_free))) struct xctx *c = calloc(1, sizeof(*c));
    int rc;

    if (c == NULL)
        return pycrio_err_set(err, ENOMEM, "malloc", "", "allocating the context");
    c->root_fd = -1;
    c->err = err;
    c->stats = stats;
    if ((rc = xstream_check_args(c, "decompress", in_fd, compression,
                                 flags & ~PYCRIO_EXTRACT_NO_ISAL, stats)) < 0)
        return rc;
    memset(stats, 0, sizeof(*stats));
    c->s.no_digests = true;
    if ((rc = xstream_open(c, in_fd, -1, compression, flags & PYCRIO_EXTRACT_NO_ISAL)) < 0 ||
        (rc = xstream_drain(c)) < 0)
        return rc;
    stats->compressed_bytes = c->s.in_total;
    stats->uncompressed_bytes = c->s.out_total;
    stats->compression = c->s.compression;
    return 0;
}
