"""Typed views of the gRPC stubs whose published type stubs say less than they do at run time:
types-grpcio-health-checking declares no methods on HealthStub, the reflection stub leaves its
method untyped, and grpc.RpcError's stub has no debug_error_string."""

from __future__ import annotations

from typing import Protocol, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


class Health(Protocol):
    Check: grpc.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]
    Watch: grpc.UnaryStreamMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]


class Reflection(Protocol):
    ServerReflectionInfo: grpc.StreamStreamMultiCallable[
        reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
    ]


class DebuggableError(Protocol):
    """A failed call as grpc raises it: its status, and the transport's own account of it."""

    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def debug_error_string(self) -> str: ...


def health_stub(channel: grpc.Channel) -> Health:
    return cast(Health, health_pb2_grpc.HealthStub(channel))


def reflection_stub(channel: grpc.Channel) -> Reflection:
    return cast(Reflection, reflection_pb2_grpc.ServerReflectionStub(channel))


def debuggable(error: grpc.RpcError) -> DebuggableError:
    return cast(DebuggableError, error)
