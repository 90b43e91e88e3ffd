"""The door of every call: who is calling (at the call's start, before its body is read), whether
its role may call the method, whether the principal is within its limits, the wait for the
request, the request checks, and the mapping of errors to statuses (`status.py`).

The server is asyncio (grpc.aio, `service.server`): a caller that opens a call and goes silent
holds a coroutine, never a thread, so no number of silent callers or watchers can stop the
server answering others. Every method but reflection's is served as request-streaming, so that
this code, not gRPC, reads the request: a refused call is answered without reading anything, a
request that does not arrive within `request_idle_seconds` (ServeConfig) ends the call, a
message's size is checked against the principal's limit before it is parsed, and a second
message to a unary method is refused. Servicer methods written as plain functions run in the
server's bounded thread pool (`_in_pool`, with the caller's context copied in); those written
as coroutines (WatchPayoutBatch, ImportFacts) run on the loop and wait without a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from grpc_status import rpc_status

from service.api import requests
from service.api.admission import Admission, Limits, check_size
from service.api.auth import OPEN_METHODS, AuthTable, Principal, authorize_method, current_principal
from service.api.status import to_status
from service.errors import (
    InvalidArgumentError,
    LimitExceededError,
    PermissionDeniedError,
    RequestTimeoutError,
    UnauthenticatedError,
)

PARSE_ON_LOOP_BYTES = 64 * 1024  # a larger request is parsed and checked in the pool
# Health checks carry no token; all of them together are one principal, bounded in flight (a
# watcher stays open) and in size, so that tokenless callers cannot take the server's slots.
ANONYMOUS = Principal("anonymous health checks", "anonymous", limits=Limits(max_in_flight=32, max_request_bytes=4096))
_END = object()  # a sync response stream's end, handed back from the pool

T = TypeVar("T")
Parse = Callable[[bytes], Message]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # a string: grpc's class is generic in its stubs only


class ApiInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call (health checks excepted: they are served as the one shared
    ANONYMOUS principal), checks the caller's role and limits, and serves the call through
    `_Door` (reflection through `_counted`: its own bidirectional servicer, counted in flight)."""

    def __init__(self, auth: AuthTable, admission: Admission, pool: Executor, request_idle_seconds: float) -> None:
        self.auth, self.admission, self.pool = auth, admission, pool
        self.request_idle_seconds = request_idle_seconds

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        if handler is None:
            return None
        if details.method in OPEN_METHODS:
            return _Door(self, ANONYMOUS, handler).method_handler()
        try:
            principal = self.auth.authenticate(details.invocation_metadata)
            authorize_method(principal, details.method)
            self.admission.take(principal.name, principal.limits)
        except (UnauthenticatedError, PermissionDeniedError, LimitExceededError) as exc:
            return _refusal(handler, to_status(exc))
        if handler.stream_stream:  # reflection; none of ours is bidirectional
            return _counted(self.admission, principal, handler)
        return _Door(self, principal, handler).method_handler()


class _Door:
    """One admitted call: reads its request, runs its servicer, maps its errors."""

    def __init__(self, interceptor: ApiInterceptor, principal: Principal, handler: Handler) -> None:
        self.admission, self.idle = interceptor.admission, interceptor.request_idle_seconds
        self.pool = interceptor.pool
        self.principal, self.handler = principal, handler
        self.parse: Parse = handler.request_deserializer or _no_parser
        # grpc's stubs type behaviors as sync functions; they may be coroutines (see module doc)
        self.behavior: Any = handler.unary_unary or handler.stream_unary or handler.unary_stream

    def method_handler(self) -> Handler:
        handler, encode = self.handler, self.handler.response_serializer
        if handler.stream_unary and not inspect.iscoroutinefunction(self.behavior):
            # A client stream is read here as it comes, which only a coroutine can take.
            raise TypeError("a client-streaming method must be a coroutine")
        if handler.unary_unary or handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(self._unary_response, response_serializer=encode)
        # A coroutine that writes, not an async generator: a call cancelled while a response is
        # written then ends here, in its own task, instead of leaving a generator suspended.
        return grpc.stream_stream_rpc_method_handler(self._stream_response, response_serializer=encode)

    async def _unary_response(self, incoming: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        async with _serving(self.admission, self.principal, context):
            if self.handler.stream_unary:
                return await self.behavior(self._messages(incoming, context), context)
            request = await self._single(incoming)
            if inspect.iscoroutinefunction(self.behavior):
                return await self.behavior(request, context)
            return await _in_pool(self.pool, self.behavior, request, context)
        return None  # not reached: `_serving` ends a failed call with its status

    async def _stream_response(
        self, incoming: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        async with _serving(self.admission, self.principal, context):
            request = await self._single(incoming)
            behavior = self.behavior
            if inspect.iscoroutinefunction(behavior):  # writes its responses itself (Health/Watch)
                await behavior(request, context)
                return
            responses: AsyncGenerator[Any, None] = (
                behavior(request, context)
                if inspect.isasyncgenfunction(behavior)
                else _from_pool(self.pool, behavior(request, context))  # made here, run step by step there
            )
            async with contextlib.aclosing(responses):
                async for response in responses:
                    await context.write(response)

    async def _single(self, incoming: AsyncIterator[bytes]) -> Message:
        """The one request message of a unary-request call, checked; a second one is refused."""
        try:
            raw = await self._next(incoming)
        except StopAsyncIteration:
            raise InvalidArgumentError([("", "the call ended without its request message")]) from None
        try:
            await self._next(incoming)
        except StopAsyncIteration:
            pass
        else:
            raise InvalidArgumentError([("", "the method takes one request message; a second one came")])
        if len(raw) > PARSE_ON_LOOP_BYTES:  # parsing and checking a large message would stall the loop
            return await _in_pool(self.pool, self._checked, raw)
        return self._checked(raw)

    def _checked(self, raw: bytes) -> Message:
        request = self._parsed(raw)
        requests.check(request)
        return request

    async def _messages(
        self, incoming: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Message]:
        """A client stream's messages, each within the idle bound and the size limit (their
        contents are the servicer's to judge, by index). A stream that ends because the call did
        is no end of the caller's records, where it can be told: gRPC's asyncio server reports a
        client's cancel, and a message it refused as too large, as a normal end, so ImportFacts
        then commits its last partial chunk (harmless: records are keyed and a resend replaces
        them; tests/integration/server/test_aio_redteam.py holds it as a known failure)."""
        while True:
            try:
                raw = await self._next(incoming)
            except StopAsyncIteration:
                if context.done() or context.cancelled():
                    raise asyncio.CancelledError("the call ended before its client stream did") from None
                return
            yield self._parsed(raw)

    async def _next(self, incoming: AsyncIterator[bytes]) -> bytes:
        try:
            return await asyncio.wait_for(anext(incoming), self.idle)
        except TimeoutError:
            raise RequestTimeoutError(f"no request message arrived within {self.idle:g} s") from None

    def _parsed(self, raw: bytes) -> Message:
        check_size(len(raw), self.principal.limits)
        try:
            return self.parse(raw)
        except DecodeError:
            raise InvalidArgumentError([("", "the request is not a valid message of the method's type")]) from None


@asynccontextmanager
async def _serving(
    admission: Admission, principal: Principal, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[None]:
    """The principal's call in flight, visible to the servicer; any error its status. Each call
    runs in a task of its own, so the principal set here is seen by this call alone."""
    try:
        admission.enter(principal.name, principal.limits)
    except LimitExceededError as exc:
        await _abort(context, to_status(exc))
    try:
        current_principal.set(principal)
        yield
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        await _abort(context, to_status(exc))
    finally:
        admission.leave(principal.name)


def _counted(admission: Admission, principal: Principal, handler: Handler) -> Handler:
    """A bidirectional handler (reflection) counted in the principal's calls in flight."""
    behavior: Any = handler.stream_stream

    async def run(requests_in: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> None:
        async with _serving(admission, principal, context):
            responses = behavior(requests_in, context)
            async with contextlib.aclosing(responses):
                async for response in responses:
                    await context.write(response)

    return grpc.stream_stream_rpc_method_handler(
        run, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


async def _in_pool(pool: Executor, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` on a pool thread, in a copy of the caller's context (the principal). A
    call cancelled meanwhile (the client left, the server stops) stays in flight until its thread
    is done with it, unless it had not started: a client that cancels and calls again cannot
    pile work up in the pool beyond its `max_in_flight`."""
    work = pool.submit(contextvars.copy_context().run, function, *args)
    try:
        return await asyncio.wrap_future(work)
    except asyncio.CancelledError:
        if not work.cancel():
            with contextlib.suppress(BaseException):  # its outcome is nobody's any more
                await asyncio.wrap_future(work)
        raise


async def _from_pool(pool: Executor, responses: Generator[Any, None, None]) -> AsyncGenerator[Any, None]:
    """A sync response stream, each step run in the pool: a thread is held while a response is
    made, never while the client reads it."""
    try:
        while (response := await _in_pool(pool, next, responses, _END)) is not _END:
            yield response
    finally:
        await _in_pool(pool, responses.close)  # after the last step ended: never two at once


def _no_parser(raw: bytes) -> Message:
    raise TypeError("a method of ours without a request deserializer")


def _refusal(handler: Handler, status: status_pb2.Status) -> Handler:
    """A handler that answers `status` at once, reading no request (a unary one would first wait
    for the body, and that wait is what a silent caller exploits)."""

    async def refuse(_incoming: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await _abort(context, status)

    async def refuse_stream(
        _incoming: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        await _abort(context, status)
        yield  # pragma: no cover - makes this an async generator; never reached

    if handler.unary_stream or handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(refuse_stream)
    return grpc.stream_unary_rpc_method_handler(refuse)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status) -> None:
    answer = rpc_status.to_status(status)
    await context.abort(answer.code, answer.details, answer.trailing_metadata)
