"""Who is calling: bearer tokens from the auth file, roles, and which role may call what."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from enterprise_registry import uscc as uscc_codes
from enterprise_registry.kinds import DEPARTMENTS
from service.api.admission import Limits, limits_for
from service.errors import AuthFileError, PermissionDeniedError, UnauthenticatedError

ROLES = ("registry_feed", "finance_operator", "finance_approver", "auditor", "enterprise", "admin")
_AUTH_HEADER_KEY = "authorization"
_BEARER = re.compile(r"Bearer ([\x21-\x7e]{16,512})")
_SHA256 = re.compile(r"[0-9a-f]{64}")

_ALL = frozenset(ROLES)
_READERS = frozenset({"enterprise", "auditor", "admin", "finance_operator", "finance_approver"})
_FINANCE_READERS = frozenset({"finance_operator", "finance_approver", "auditor", "admin"})

# Which roles may call each method. A method missing here is refused for everyone.
METHOD_ROLES: Mapping[str, frozenset[str]] = {
    "/benefits.v1.PolicyService/ListPolicies": _ALL,
    "/benefits.v1.PolicyService/GetPolicy": _ALL,
    # Only feeds: each names the departments it writes for, so every imported fact is attributable
    # to the department that holds it. An admin is no department and imports nothing.
    "/benefits.v1.RegistryService/ImportFacts": frozenset({"registry_feed"}),
    "/benefits.v1.RegistryService/GetEnterprise": frozenset({"enterprise", "auditor", "admin", "registry_feed"}),
    "/benefits.v1.BenefitService/ListMatchedBenefits": _READERS,
    "/benefits.v1.BenefitService/ExplainEligibility": _READERS,
    "/benefits.v1.PayoutService/CreatePayoutBatch": frozenset({"finance_operator"}),
    "/benefits.v1.PayoutService/GetPayoutBatch": _FINANCE_READERS,
    "/benefits.v1.PayoutService/WatchPayoutBatch": _FINANCE_READERS,
    "/benefits.v1.PayoutService/ListPayoutLines": _FINANCE_READERS,
    "/benefits.v1.PayoutService/ApprovePayoutBatch": frozenset({"finance_approver"}),
    "/benefits.v1.PayoutService/ExportPayoutBatch": frozenset({"finance_operator"}),
    "/benefits.v1.PayoutService/RecordPayoutResults": frozenset({"finance_operator"}),
    "/benefits.v1.PayoutService/ImportPaymentStatusReport": frozenset({"finance_operator"}),
    # An APPROVED batch only by an approver (checked by the batch itself).
    "/benefits.v1.PayoutService/CancelPayoutBatch": frozenset({"finance_operator", "finance_approver"}),
    "/benefits.v1.PayoutService/WithdrawPayoutLines": frozenset({"finance_approver"}),
    # Never by the principal who recorded the return (checked by the batch itself).
    "/benefits.v1.PayoutService/ConfirmPayoutReturns": frozenset({"finance_approver"}),
    "/benefits.v1.AuditService/GetEvaluation": frozenset({"auditor", "admin"}),
    "/benefits.v1.AuditService/ListEvaluations": frozenset({"auditor", "admin"}),
    "/benefits.v1.AuditService/VerifyAuditLog": frozenset({"auditor", "admin"}),
    "/benefits.v1.AuditService/ReplayEvaluation": frozenset({"auditor", "admin"}),
    # Reflection shows only the public contract, but still needs a valid token.
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": _ALL,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": _ALL,
}
# Probed by orchestrators without credentials; answers only SERVING / NOT_SERVING.
OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    uscc: str | None = None  # enterprises only
    sources: tuple[str, ...] = ()  # registry feeds only: the departments whose facts it writes
    limits: Limits = field(default_factory=Limits)  # what it may ask of the server (`admission`)

    @property
    def is_enterprise(self) -> bool:
        return self.role == "enterprise"


current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)


class AuthTable:
    """Token digests -> principals, loaded from the YAML auth file."""

    def __init__(self, principals: Mapping[str, Principal]) -> None:
        self._by_digest = dict(principals)

    def __len__(self) -> int:
        return len(self._by_digest)

    @classmethod
    def from_file(cls, path: Path) -> AuthTable:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise AuthFileError(f"{path}: cannot read the auth file: {exc}") from None
        return cls.from_data(data, str(path))

    @classmethod
    def from_data(cls, data: object, origin: str = "<auth>") -> AuthTable:
        if not isinstance(data, dict) or set(data) != {"principals"} or not isinstance(data["principals"], list):
            raise AuthFileError(f"{origin}: expected one key `principals` holding a list")
        table: dict[str, Principal] = {}
        names: set[str] = set()
        for index, entry in enumerate(data["principals"]):
            principal, digest = _entry(entry, f"{origin}: principals[{index}]")
            if principal.name in names:
                raise AuthFileError(f"{origin}: principals[{index}]: principal {principal.name!r} appears twice")
            if digest in table:
                raise AuthFileError(f"{origin}: principals[{index}]: token already used by {table[digest].name!r}")
            names.add(principal.name)
            table[digest] = principal
        return cls(table)

    def authenticate(self, metadata: object) -> Principal:
        """The caller of a request, from its `authorization: Bearer <token>` metadata."""
        values = [v for k, v in (metadata or ()) if k == _AUTH_HEADER_KEY]  # type: ignore[attr-defined]
        if not values:
            raise UnauthenticatedError("missing `authorization: Bearer <token>` metadata")
        match = _BEARER.fullmatch(values[0] if isinstance(values[0], str) else "")
        if len(values) > 1 or match is None:
            raise UnauthenticatedError("malformed authorization metadata")
        digest = hashlib.sha256(match.group(1).encode()).hexdigest()
        for known, principal in self._by_digest.items():  # constant-time compare of each digest
            if hmac.compare_digest(known, digest):
                return principal
        raise UnauthenticatedError("unknown token")


def authorize_method(principal: Principal, method: str) -> None:
    if principal.role not in METHOD_ROLES.get(method, frozenset()):
        raise PermissionDeniedError(f"role {principal.role} may not call {method.rsplit('/', 1)[-1]}")


def authorize_uscc(principal: Principal, uscc: str) -> None:
    """An enterprise reads only its own records. Checked before the USCC is validated or looked
    up, so the answer never tells whether another enterprise exists (AIP-211)."""
    if principal.is_enterprise and uscc != principal.uscc:
        raise PermissionDeniedError("an enterprise may only read its own records")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _entry(entry: object, where: str) -> tuple[Principal, str]:
    if not isinstance(entry, dict):
        raise AuthFileError(f"{where}: expected a mapping")
    unknown = set(entry) - {"principal", "role", "uscc", "sources", "token", "token_sha256", "limits"}
    if unknown:
        raise AuthFileError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    name, role = entry.get("principal"), entry.get("role")
    if not isinstance(name, str) or not name:
        raise AuthFileError(f"{where}: `principal` must be a non-empty string")
    if role not in ROLES:
        raise AuthFileError(f"{where}: `role` must be one of {', '.join(ROLES)}")
    code = entry.get("uscc")
    if role == "enterprise":
        if not isinstance(code, str) or not uscc_codes.is_valid(code):
            raise AuthFileError(f"{where}: an enterprise needs a valid `uscc`")
    elif code is not None:
        raise AuthFileError(f"{where}: only enterprises have a `uscc`")
    sources: tuple[str, ...] = ()
    if role == "registry_feed":
        sources = _sources(entry.get("sources"), where)
    elif "sources" in entry:
        raise AuthFileError(f"{where}: only a registry_feed has `sources`")
    token, digest = entry.get("token"), entry.get("token_sha256")
    if (token is None) == (digest is None):
        raise AuthFileError(f"{where}: give exactly one of `token` or `token_sha256`")
    if token is not None:
        if not isinstance(token, str) or not _BEARER.fullmatch(f"Bearer {token}"):
            raise AuthFileError(f"{where}: `token` must be 16-512 printable ASCII characters")
        digest = token_digest(token)
    elif not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise AuthFileError(f"{where}: `token_sha256` must be 64 lower-case hex digits")
    overrides = entry.get("limits", {})
    if not isinstance(overrides, dict):
        raise AuthFileError(f"{where}: `limits` must be a mapping")
    try:
        limits = limits_for(role, overrides, f"{where}: limits")
    except ValueError as exc:
        raise AuthFileError(str(exc)) from None
    return Principal(name, role, code, sources, limits), digest


def _sources(value: object, where: str) -> tuple[str, ...]:
    """The departments of a feed entry: a non-empty list of known ones, each named once."""
    known = ", ".join(DEPARTMENTS)
    if not isinstance(value, list) or not value:
        raise AuthFileError(
            f"{where}: a registry_feed needs `sources`, a non-empty list of the departments it writes for (of {known})"
        )
    for position, source in enumerate(value):
        if not isinstance(source, str) or source not in DEPARTMENTS:
            raise AuthFileError(f"{where}: `sources` holds {source!r}, which is no source department (one of {known})")
        if source in value[:position]:
            raise AuthFileError(f"{where}: `sources` names {source!r} twice")
    return tuple(value)
