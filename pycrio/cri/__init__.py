"""The CRI runtime.v1 API: api.proto and the stubs generated from it at build time."""
