"""Per-principal limits: the auth file's `limits` over the role's defaults, the rate bucket, calls
in flight and request sizes (service.api.admission), on an injected clock."""

from __future__ import annotations

import pytest

from service.api.admission import ROLE_LIMITS, Admission, Limits, check_size
from service.api.auth import AuthTable
from service.config import MAX_MESSAGE_BYTES
from service.errors import AuthFileError, LimitExceededError

ENTERPRISE: dict[str, object] = {
    "principal": "firm",
    "role": "enterprise",
    "token": "firm-token-0123456789",
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _principal(**entry: object) -> Limits:
    from testkit.api_fixtures import A

    fields = {**ENTERPRISE, "uscc": A, **entry}
    table = AuthTable.from_data({"principals": [fields]}, "auth.yaml")
    return table.authenticate([("authorization", f"Bearer {fields['token']}")]).limits


def test_an_enterprise_has_its_roles_defaults_and_the_bureau_is_unlimited_in_rate() -> None:
    assert _principal() == ROLE_LIMITS["enterprise"]
    admin = _principal(role="admin", uscc=None, principal="ops")
    assert admin == Limits() and admin.calls_per_second is None and admin.max_request_bytes == MAX_MESSAGE_BYTES


def test_the_auth_file_overrides_only_the_keys_it_names() -> None:
    limits = _principal(limits={"calls_per_second": 50, "max_in_flight": 3})
    assert limits == Limits(
        calls_per_second=50.0,
        burst=ROLE_LIMITS["enterprise"].burst,
        max_in_flight=3,
        max_request_bytes=ROLE_LIMITS["enterprise"].max_request_bytes,
    )


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        ({"per_minute": 3}, "unknown limit 'per_minute'"),
        ({"calls_per_second": 0}, "`calls_per_second` must be a positive number"),
        ({"calls_per_second": "fast"}, "`calls_per_second` must be a positive number"),
        ({"burst": 0}, "`burst` must be a positive whole number"),
        ({"max_in_flight": 2.5}, "`max_in_flight` must be a positive whole number"),
        ({"max_request_bytes": True}, "`max_request_bytes` must be a positive whole number"),
        ({"max_request_bytes": MAX_MESSAGE_BYTES + 1}, "may not exceed the server's"),
        ([1, 2], "`limits` must be a mapping"),
    ],
)
def test_a_limit_that_cannot_work_is_refused_naming_the_entry_and_key(limits: object, named: str) -> None:
    with pytest.raises(AuthFileError) as info:
        _principal(limits=limits)
    assert "principals[0]" in str(info.value) and named in str(info.value)


def test_the_bucket_admits_a_burst_then_the_steady_rate_and_says_when() -> None:
    clock, limits = Clock(), Limits(calls_per_second=4.0, burst=2)
    admission = Admission(clock)
    admission.take("firm", limits)
    admission.take("firm", limits)
    with pytest.raises(LimitExceededError) as info:
        admission.take("firm", limits)
    assert info.value.retry_after == pytest.approx(0.25)
    admission.take("other", limits)  # another principal has a bucket of its own
    clock.now += 0.25
    admission.take("firm", limits)
    clock.now += 60  # a long pause refills no more than the burst
    admission.take("firm", limits)
    admission.take("firm", limits)
    with pytest.raises(LimitExceededError):
        admission.take("firm", limits)


def test_an_unlimited_rate_never_refuses() -> None:
    admission = Admission(Clock())
    for _ in range(10_000):
        admission.take("ops", Limits())


def test_calls_in_flight_are_counted_per_principal_and_released() -> None:
    admission, limits = Admission(Clock()), Limits(max_in_flight=2)
    admission.enter("firm", limits)
    admission.enter("firm", limits)
    with pytest.raises(LimitExceededError) as info:
        admission.enter("firm", limits)
    assert info.value.retry_after == 1.0
    admission.enter("other", limits)
    admission.leave("firm")
    admission.enter("firm", limits)
    assert (admission.in_flight("firm"), admission.in_flight("other")) == (2, 1)
    for name in ("firm", "firm", "other"):
        admission.leave(name)
    assert admission.in_flight("firm") == admission.in_flight("other") == 0


def test_a_request_over_the_size_limit_has_no_retry_hint() -> None:
    check_size(1024, Limits(max_request_bytes=1024))
    with pytest.raises(LimitExceededError) as info:
        check_size(1025, Limits(max_request_bytes=1024))
    assert info.value.retry_after is None and "1025 bytes" in str(info.value)
