"""Domain errors: what the daemon's parts raise; server/errors.py maps them to gRPC codes."""

from __future__ import annotations


class PycrioError(Exception):
    """Base of every error the daemon expects to report to a client."""


class NotFound(PycrioError, LookupError):
    """The named object (pod, container, image) does not exist."""


class AlreadyExists(PycrioError):
    """An object with that name or id exists already."""


class InvalidArgument(PycrioError, ValueError):
    """The request is malformed or asks for something impossible."""


class FailedPrecondition(PycrioError):
    """The request is valid but the object's state forbids it now."""


class ResourceExhausted(PycrioError):
    """A limit was reached (disk, IP addresses, sizes)."""


class DeadlineExceeded(PycrioError, TimeoutError):
    """The work did not finish in the time it was given."""


class Unimplemented(PycrioError, NotImplementedError):
    """The RPC or option is not implemented by this version of pycrio."""


class Unauthenticated(PycrioError, PermissionError):
    """The registry (or its token service) wants credentials that were not given or were refused."""


class PermissionDenied(PycrioError, PermissionError):
    """The credentials were accepted but do not allow the operation, or the node's configuration does not
    (a device not in allowed_devices)."""


class Unavailable(PycrioError, ConnectionError):
    """A service the request needs (a registry) cannot be reached or keeps failing; retrying later may work."""
