"""Payees: normalised comparison (what counts as a changed account) and masking."""

from __future__ import annotations

import pytest

from service.payouts.payees import Payee, mask_account

SEALED = Payee("襄阳示例汽车零部件有限公司", "1804000109200012345", "中国工商银行襄阳分行")


@pytest.mark.parametrize(
    "now",
    [
        Payee("襄阳示例汽车零部件有限公司", "1804000109200012345", "中国工商银行襄阳分行"),
        Payee(" 襄阳示例汽车零部件有限公司 ", "1804 0001 0920 0012 345", "中国工商银行襄阳分行"),
        Payee("襄阳示例汽车零部件有限公司", "1804-0001-0920-0012-345", "中国工商银行襄阳分行 "),
        # full-width digits
        Payee("襄阳示例汽车零部件有限公司", "１８０４０００１０９２０００１２３４５", "中国工商银行襄阳分行"),
    ],
)
def test_the_same_account_written_differently_is_no_change(now: Payee) -> None:
    assert SEALED.same_as(now)


@pytest.mark.parametrize(
    "now",
    [
        Payee("襄阳示例汽车零部件有限公司", "1804000109200012346", "中国工商银行襄阳分行"),  # another number
        Payee("襄阳另一家有限公司", "1804000109200012345", "中国工商银行襄阳分行"),  # another holder
        Payee("襄阳示例汽车零部件有限公司", "1804000109200012345", "中国建设银行襄阳分行"),  # another bank
        None,  # removed
    ],
)
def test_another_name_number_or_bank_or_none_is_a_change(now: Payee | None) -> None:
    assert not SEALED.same_as(now)


def test_only_the_last_four_digits_are_shown() -> None:
    assert SEALED.masked_account == "*" * 15 + "2345"
    assert mask_account("123") == "123" and mask_account("") == ""
