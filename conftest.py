"""Collects the policy test cases (`rules/**/<id>.test.yaml`) as pytest items, one per case."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.name.endswith(".test.yaml"):
        return PolicyTestFile.from_parent(parent, path=file_path)
    return None


class PolicyTestFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from rules.loader import load_policy_file
        from service.catalogue import CATALOGUE
        from service.policy_tests import load_cases

        policy_path = self.path.with_name(self.path.name.removesuffix(".test.yaml") + ".yaml")
        policy = load_policy_file(policy_path, CATALOGUE)
        for case in load_cases(policy):
            yield PolicyCaseItem.from_parent(self, name=case.name, policy=policy, case=case)


class PolicyCaseItem(pytest.Item):
    def __init__(self, *, policy: Any, case: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.policy, self.case = policy, case

    def runtest(self) -> None:
        from service.policy_tests import run_case

        result = run_case(self.policy, self.case)
        if not result.passed:
            raise PolicyCaseFailure(result.problems)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, PolicyCaseFailure):
            return f"{self.policy.id}: {self.name}\n  " + "\n  ".join(excinfo.value.problems)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"policy case: {self.name}"


class PolicyCaseFailure(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
