"""Every error of every layer has a gRPC status in the one table (service/api/status.py)."""

from __future__ import annotations

import grpc
import pytest

from enterprise_registry.errors import RegistryError
from rules.errors import RuleError
from service.api.status import ERROR_CODES, status_code_for
from service.errors import ServiceError


def _subclasses(base: type[BaseException]) -> list[type[BaseException]]:
    out = [base]
    for sub in base.__subclasses__():
        out += _subclasses(sub)
    return out


@pytest.mark.parametrize(
    "error",
    [e for base in (ServiceError, RuleError, RegistryError) for e in _subclasses(base)],
    ids=lambda e: e.__name__,
)
def test_every_error_maps_to_a_status(error: type[BaseException]) -> None:
    code = next((ERROR_CODES[c] for c in error.__mro__ if c in ERROR_CODES), None)
    assert code is not None and code != grpc.StatusCode.UNKNOWN


def test_bad_input_never_maps_to_internal() -> None:
    from rules.errors import PeriodNotCoveredError, PolicyNotFoundError
    from service.errors import EnterpriseNotFoundError, InvalidArgumentError

    assert status_code_for(InvalidArgumentError([("uscc", "x")])) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_code_for(PeriodNotCoveredError("p", 2024, [2025], False)) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_code_for(PolicyNotFoundError("p")) == grpc.StatusCode.NOT_FOUND
    assert status_code_for(EnterpriseNotFoundError("x")) == grpc.StatusCode.NOT_FOUND
    assert status_code_for(ValueError("boom")) is None  # unknown errors: logged, answered INTERNAL
