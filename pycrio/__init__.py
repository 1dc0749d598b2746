"""pycrio: a Kubernetes container runtime serving the CRI over gRPC."""

__version__ = "0.1.0"
