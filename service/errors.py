"""Errors of the service layer.

ServiceError
└── EnterpriseNotFoundError      nothing is on record for a USCC
"""
from __future__ import annotations


class ServiceError(Exception):
    """Base of every error raised by the service layer itself."""


class EnterpriseNotFoundError(ServiceError):
    """Raised when no registry record or fact of any kind exists for a USCC."""

    def __init__(self, uscc: str) -> None:
        self.uscc = uscc
        super().__init__(f"no facts on record for enterprise {uscc}")
