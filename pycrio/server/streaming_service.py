"""Streaming RPCs: Exec, Attach, PortForward answer with a single-use URL of the streaming server."""

from __future__ import annotations

from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition, InvalidArgument
from pycrio.lifecycle import Lifecycle
from pycrio.streaming.server import StreamingServer
from pycrio.streaming.tokens import StreamRequest


def _check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
    """The kubelet's checks of an exec or attach request."""
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")
    if tty and stderr:
        raise InvalidArgument("tty and stderr cannot both be true")


class StreamingServicer:
    def __init__(self, lifecycle: Lifecycle, server: StreamingServer):
        self.lifecycle = lifecycle
        self.server = server

    def _running(self, container_id: str):
        c = self.lifecycle.find_container(container_id)
        if c.state != "running":
            raise FailedPrecondition(f"container {c.id[:12]} is not running (state {c.state})")
        return c

    async def Exec(self, request, context):
        c = self._running(request.container_id)
        _check_streams(request.stdin, request.stdout, request.stderr, request.tty)
        url = self.server.url(
            StreamRequest(
                "exec",
                container_id=c.id,
                cmd=tuple(request.cmd),
                stdin=request.stdin,
                stdout=request.stdout,
                stderr=request.stderr,
                tty=request.tty,
            )
        )
        return api_pb2.ExecResponse(url=url)

    async def Attach(self, request, context):
        c = self._running(request.container_id)
        _check_streams(request.stdin, request.stdout, request.stderr, request.tty)
        url = self.server.url(
            StreamRequest(
                "attach",
                container_id=c.id,
                stdin=request.stdin,
                stdout=request.stdout,
                stderr=request.stderr,
                tty=request.tty,
            )
        )
        return api_pb2.AttachResponse(url=url)

    async def PortForward(self, request, context):
        pod = self.lifecycle.find_pod(request.pod_sandbox_id)
        if pod.state != "ready":
            raise FailedPrecondition(f"pod sandbox {pod.id[:12]} is not ready (state {pod.state})")
        for port in request.port:
            if not 0 < port < 65536:
                raise InvalidArgument(f"invalid port {port}: expected 1-65535")
        url = self.server.url(StreamRequest("portforward", pod_id=pod.id, ports=tuple(request.port)))
        return api_pb2.PortForwardResponse(url=url)
