"""On-disk storage: the content store (blobs by digest) and the layer store (layer dirs by chain id)."""
