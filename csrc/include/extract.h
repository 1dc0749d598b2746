/* extract.h: extracting an OCI image layer (a tar stream, plain, gzip or zstd) into a directory.
 *
 * pycrio_extract_layer reads in_fd to EOF, verifies the compressed stream's end and extracts
 * every entry beneath dest_dir, whatever the names, symlinks and hard links in the archive say:
 * absolute names and ".." are clamped at dest_dir, symlinks are resolved as if dest_dir were
 * "/" (openat2 RESOLVE_IN_ROOT, or an equivalent walk when openat2 is missing), and the final
 * component of a path is never followed.  OCI whiteouts become overlay whiteouts (a character
 * device 0:0) and opaque markers the xattr trusted.overlay.opaque=y.
 *
 * On failure the function returns -errno, fills err (step, the entry's tar path, a message)
 * and leaves dest_dir partially filled: the caller removes it.  It never exits the process.
 * Thread-safe: no global state; cffi releases the GIL, so several layers may be extracted at
 * once.  Small regular files are written by up to 4 worker threads of the call's own, in the
 * archive's order where it matters (replacements, links, whiteouts); all have ended on return.
 * stats is caller-owned and filled on success.  Fed to cffi's cdef as is (no #if).
 */

/* AUTO: detect from the magic bytes, gzip 1f8b, zstd 28b52ffd, else a plain tar */
#define PYCRIO_COMPRESSION_AUTO 0
#define PYCRIO_COMPRESSION_NONE 1
#define PYCRIO_COMPRESSION_GZIP 2
#define PYCRIO_COMPRESSION_ZSTD 3

#define PYCRIO_EXTRACT_NO_OPENAT2 1 /* force the fallback resolver, as if openat2 gave ENOSYS */
#define PYCRIO_EXTRACT_SYNC 2       /* syncfs() the destination's filesystem at the end */
#define PYCRIO_EXTRACT_NO_ISAL 4    /* decode gzip with zlib even when ISA-L is built in */
#define PYCRIO_EXTRACT_SERIAL 8     /* write every file in the calling thread (no worker threads) */

#define PYCRIO_FEATURE_ISAL 1    /* gzip is decoded with ISA-L igzip */
#define PYCRIO_FEATURE_ZSTD 2    /* zstd layers are supported */
#define PYCRIO_FEATURE_OPENAT2 4 /* the kernel has openat2 (else the fallback resolver runs) */

struct pycrio_extract_stats {
    unsigned long long compressed_bytes;   /* bytes read from in_fd (the blob) */
    unsigned long long uncompressed_bytes; /* bytes of the tar stream */
    char compressed_digest[72];            /* "sha256:<64 hex>" of every byte read from in_fd */
    char diff_digest[72];                  /* "sha256:<64 hex>" of the tar stream (the diff ID) */
    unsigned long long files, dirs, symlinks, hardlinks, devices, fifos, whiteouts, opaques;
    unsigned long long xattrs;         /* extended attributes set */
    unsigned long long xattrs_skipped; /* refused with ENOTSUP, or trusted.overlay.* ones */
    int compression;                   /* what was used (detected when AUTO) */
};

/* A mask of PYCRIO_FEATURE_* available in this build on this kernel. */
int pycrio_extract_features(void);

/* Read a (compressed) tar layer from in_fd until EOF and extract it into the existing empty
 * directory dest_dir.  When tee_fd >= 0, every byte read from in_fd is also written to tee_fd.
 * compression: PYCRIO_COMPRESSION_*; flags: PYCRIO_EXTRACT_*.  Returns 0 or -errno. */
int pycrio_extract_layer(int in_fd, int tee_fd, const char *dest_dir, int compression, int flags,
                         struct pycrio_extract_stats *stats, struct pycrio_err *err);

/* Decode the (compressed) stream read from in_fd until EOF and discard the output: no tar
 * parsing, no digests, nothing written.  It measures the decoder alone (benchmarks) and checks
 * that a stream decodes completely.  stats gets compressed_bytes, uncompressed_bytes and
 * compression; its digests are left empty.  flags: 0 or PYCRIO_EXTRACT_NO_ISAL.
 * Returns 0 or -errno. */
int pycrio_decompress_discard(int in_fd, int compression, int flags,
                              struct pycrio_extract_stats *stats, struct pycrio_err *err);
