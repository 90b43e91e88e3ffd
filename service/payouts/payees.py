"""Payees: the bank account a line is paid to, as read from the registry when its batch reached
DRAFT, compared with the registry's account now, and shown masked.

Two accounts are the same payee when their normalised name, number and bank are equal: Unicode
NFKC (full-width digits and letters become ASCII), surrounding and repeated white space dropped,
and spaces and hyphens removed from the number. A newer `as_of` with the same account is no
change; a different name, number or bank, or an account removed, is.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from enterprise_registry.models import table_for
from service.payouts.tables import in_lists

_SPACES = re.compile(r"\s+")
_NUMBER_SEPARATORS = re.compile(r"[\s\-]")


@dataclass(frozen=True)
class Payee:
    name: str
    account_no: str
    bank: str

    def normalised(self) -> Payee:
        return Payee(
            _text(self.name),
            _NUMBER_SEPARATORS.sub("", unicodedata.normalize("NFKC", self.account_no)),
            _text(self.bank),
        )

    def same_as(self, other: Payee | None) -> bool:
        return other is not None and self.normalised() == other.normalised()

    @property
    def masked_account(self) -> str:
        return mask_account(self.account_no)


def mask_account(account_no: str) -> str:
    """The account number with every character but the last four replaced by '*'."""
    return "*" * max(len(account_no) - 4, 0) + account_no[-4:]


def registry_payees(connection: Connection, usccs: Iterable[str]) -> dict[str, Payee | None]:
    """The registry's account of each enterprise now (None: no account on record)."""
    table = table_for("enterprise")
    wanted = sorted(set(usccs))
    out: dict[str, Payee | None] = dict.fromkeys(wanted)
    for chunk in in_lists(wanted):
        for row in connection.execute(
            select(
                table.c.uscc, table.c.name, table.c.bank_account_name, table.c.bank_account_no, table.c.bank_name
            ).where(table.c.uscc.in_(chunk))
        ):
            if row.bank_account_no:
                out[row.uscc] = Payee(row.bank_account_name or row.name, row.bank_account_no, row.bank_name or "")
    return out


def line_payee(line: Mapping[str, Any]) -> Payee:
    """The payee sealed in a line."""
    return Payee(str(line["payee_name"]), str(line["payee_account_no"]), str(line["payee_bank"]))


def changed_payees(connection: Connection, lines: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The lines whose sealed payee is no longer the registry's account, in the given order."""
    now = registry_payees(connection, (str(line["uscc"]) for line in lines))
    return [line for line in lines if not line_payee(line).same_as(now[str(line["uscc"])])]


def _text(value: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", value)).strip()
