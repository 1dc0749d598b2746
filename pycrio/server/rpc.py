"""Turns servicer objects into gRPC handlers: request ids, validation, timing, error mapping.

Every RPC of a service is registered; one the servicers lack answers
UNIMPLEMENTED with its name, so no call ever crashes or hangs the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import text_format
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from pycrio import __version__, log
from pycrio.cri import api_pb2
from pycrio.errors import InvalidArgument
from pycrio.heap_trim import HeapTrimmer
from pycrio.metrics import METRICS
from pycrio.server.errors import status_for
from pycrio.server.validate import is_repeated, validate

logger = logging.getLogger("pycrio.rpc")


class _Malformed:
    """Stands in for a request whose bytes did not parse; the handler answers INVALID_ARGUMENT."""

    def __init__(self, type_name: str, error: Exception):
        self.message = f"malformed {type_name}: {error}"


def _deserializer(request_type: type[Message]) -> Callable[[bytes], Message | _Malformed]:
    def parse(data: bytes) -> Message | _Malformed:
        try:
            return request_type.FromString(data)
        except DecodeError as e:
            return _Malformed(request_type.DESCRIPTOR.name, e)

    return parse


def _check_request(rpc: str, request: Message | _Malformed) -> None:
    if isinstance(request, _Malformed):
        raise InvalidArgument(request.message)
    validate(rpc, request)


def _redacted(msg: Message) -> Message:
    """A copy of msg with every field marked debug_redact (credentials) replaced."""
    copy = type(msg)()
    copy.CopyFrom(msg)
    stack = [copy]
    while stack:
        current = stack.pop()
        for field, value in current.ListFields():
            if field.GetOptions().debug_redact and field.type == field.TYPE_STRING:
                setattr(current, field.name, "[redacted]")
            elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
                stack.extend(value if is_repeated(field) else [value])
    return copy


def _short(msg: Message | _Malformed) -> str:
    if isinstance(msg, _Malformed):
        return msg.message
    msg = _redacted(msg)
    return text_format.MessageToString(msg, as_one_line=True)[:2000]


async def _fail(
    context: grpc.aio.ServicerContext, rpc: str, started: float, exc: Exception, streaming: bool = False
) -> None:
    code, message = status_for(exc)
    elapsed = time.monotonic() - started
    METRICS.rpc(rpc, code.name, None if streaming else elapsed)
    ms = elapsed * 1000
    if code == grpc.StatusCode.INTERNAL:
        logger.error("%s failed after %.1f ms: %s", rpc, ms, message, exc_info=exc)
    else:
        logger.info("%s -> %s after %.1f ms: %s", rpc, code.name, ms, message)
    await context.abort(code, message)


def _unary(rpc: str, method: Callable[..., Any], trimmer: HeapTrimmer | None) -> Callable[..., Any]:
    async def handle(request: Message, context: grpc.aio.ServicerContext) -> Message:
        token = log.request_id.set(secrets.token_hex(4))
        started = time.monotonic()
        if trimmer is not None:
            trimmer.begin()
        try:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s request: %s", rpc, _short(request))
            _check_request(rpc, request)
            response = await method(request, context)
            elapsed = time.monotonic() - started
            METRICS.rpc(rpc, "OK", elapsed)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("%s done in %.2f ms: %s", rpc, elapsed * 1000, _short(response))
            return response
        except asyncio.CancelledError:  # the client went away or its deadline passed
            METRICS.rpc(rpc, "CANCELLED", time.monotonic() - started)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await _fail(context, rpc, started, exc)
            raise  # not reached: abort raises
        finally:
            log.request_id.reset(token)
            if trimmer is not None:
                trimmer.end()

    return handle


def _server_stream(rpc: str, method: Callable[..., Any]) -> Callable[..., Any]:
    async def handle(request: Message, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
        token = log.request_id.set(secrets.token_hex(4))
        started = time.monotonic()
        try:
            logger.debug("%s stream opened: %s", rpc, _short(request))
            _check_request(rpc, request)
            async for item in method(request, context):
                yield item
            METRICS.rpc(rpc, "OK", None)
            logger.debug("%s stream closed after %.1f ms", rpc, (time.monotonic() - started) * 1000)
        except asyncio.CancelledError:  # the usual end of a watch: the client hung up
            METRICS.rpc(rpc, "CANCELLED", None)
            raise
        except Exception as exc:  # noqa: BLE001
            await _fail(context, rpc, started, exc, streaming=True)
        finally:
            log.request_id.reset(token)

    return handle


def _unimplemented(service: str, rpc: str, streaming: bool) -> Callable[..., Any]:
    message = f"{service}.{rpc} is not implemented in pycrio {__version__}"

    async def unary(_request: Message, context: grpc.aio.ServicerContext) -> Message:
        logger.debug("%s: unimplemented", rpc)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
        raise AssertionError("abort returned")

    async def stream(_request: Message, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
        logger.debug("%s: unimplemented", rpc)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
        yield  # pragma: no cover - makes this an async generator

    return stream if streaming else unary


def generic_handler(
    service: ServiceDescriptor, servicers: list[object], trimmer: HeapTrimmer | None = None
) -> grpc.GenericRpcHandler:
    """A handler for every method of service, served by the first servicer that has it.

    trimmer hears when each unary RPC begins and ends (streams live for hours, so they do not count).
    """
    handlers = {}
    for method in service.methods:
        request_type = getattr(api_pb2, method.input_type.name)
        response_type = getattr(api_pb2, method.output_type.name)
        impl = next((getattr(s, method.name) for s in servicers if hasattr(s, method.name)), None)
        streaming = method.server_streaming
        if impl is None:
            fn = _unimplemented(service.name, method.name, streaming)
        else:
            fn = _server_stream(method.name, impl) if streaming else _unary(method.name, impl, trimmer)
        make = grpc.unary_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(
            fn, request_deserializer=_deserializer(request_type), response_serializer=response_type.SerializeToString
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
