"""pycrio/server/errors.py: the table from exceptions to gRPC status codes."""

from __future__ import annotations

import grpc
import pytest

from pycrio import errors
from pycrio.native import NativeError
from pycrio.server.errors import status_for


@pytest.mark.parametrize(
    "exc,code",
    [
        (errors.NotFound("pod x not found"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("name taken"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.InvalidArgument("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.FailedPrecondition("not running"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.ResourceExhausted("disk full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.DeadlineExceeded("too slow"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (TimeoutError("timed out"), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.Unimplemented("later"), grpc.StatusCode.UNIMPLEMENTED),
        (RuntimeError("boom"), grpc.StatusCode.INTERNAL),
    ],
)
def test_codes(exc, code):
    got, message = status_for(exc)
    assert got == code
    assert str(exc) in message


def test_message_keeps_the_cause_chain():
    try:
        try:
            raise NativeError(2, "statfs", "/x", "statfs /x: No such file or directory")
        except OSError as e:
            raise errors.NotFound("pod abc: namespace file missing") from e
    except errors.NotFound as e:
        code, message = status_for(e)
    assert code == grpc.StatusCode.NOT_FOUND
    assert message == "pod abc: namespace file missing: statfs /x: No such file or directory (errno 2)"


def test_internal_errors_say_so():
    code, message = status_for(KeyError("k"))
    assert code == grpc.StatusCode.INTERNAL
    assert message.startswith("internal error:")
