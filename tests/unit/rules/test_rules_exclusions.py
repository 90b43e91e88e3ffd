"""`excludes:`: checked per file and against the directory, symmetric, grouped into families."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rules_testkit import (
    POLICIES_DIR,
    TODAY,
    load_text,
    policy_yaml,
    position_of,
    shipped_policies,
    stable_document,
    write_policy,
)

from rules.errors import PolicyNotFoundError, PolicySchemaError
from rules.evaluator import evaluate
from rules.loader import PolicySet, PolicyStore, load_policy_dir, load_policy_file, load_policy_text
from rules.values import Outcome
from service.catalogue import CATALOGUE

ANCHOR = "fact_year: previous\n"


def with_keys(policy_id: str, excludes: list[str] | None = None, group: str | None = None) -> str:
    """A minimal policy named `policy_id`, excluding `excludes` (a block list, one id a line)."""
    extra = ""
    if group is not None:
        extra += f"conflict_group: {group}\n"
    if excludes is not None:
        extra += "excludes:\n" + "".join(f"  - {other}\n" for other in excludes)
    text = policy_yaml(["si.layoffs > 1"], policy_id=policy_id)
    assert text.count(ANCHOR) == 1
    return text.replace(ANCHOR, ANCHOR + extra)


def directory(tmp_path: Path, policies: dict[str, str]) -> Path:
    for policy_id, text in policies.items():
        write_policy(tmp_path, text, policy_id)
    return tmp_path


def load_dir(root: Path) -> PolicySet:
    return load_policy_dir(root, CATALOGUE, require_tests=False)


# --- each entry, within its own file ----------------------------------------------------------


def test_excludes_loads_in_file_order(tmp_path: Path) -> None:
    policy = load_text(tmp_path, with_keys("demo", ["zeta", "alpha"]))
    assert policy.excludes == ("zeta", "alpha")
    assert load_text(tmp_path, with_keys("demo")).excludes == ()


def test_self_exclusion_is_refused_on_its_line(tmp_path: Path) -> None:
    text = with_keys("demo", ["other", "demo"])
    with pytest.raises(PolicySchemaError) as info:
        load_text(tmp_path, text)
    error = info.value
    assert (error.file, error.line, error.field) == (
        str(tmp_path / "demo.yaml"),
        position_of(text, "- demo")[0],
        "excludes.1",
    )
    assert "cannot exclude itself" in error.reason


def test_duplicate_exclusion_is_refused_on_the_second_occurrence(tmp_path: Path) -> None:
    text = with_keys("demo", ["other", "third", "other"])
    with pytest.raises(PolicySchemaError) as info:
        load_text(tmp_path, text)
    first = position_of(text, "- other")[0]
    assert info.value.line == position_of(text, "- other", occurrence=2)[0]
    assert info.value.field == "excludes.2"
    assert f"'other' is already excluded on line {first}" in info.value.reason


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("Stable_Jobs", "ids are lower-case words joined by '-'"),
        ("stable-jobs-", "ids are lower-case words joined by '-'"),
        ("2025", "valid string"),
        ("[a, b]", "valid string"),
    ],
)
def test_an_entry_that_is_not_a_policy_id_is_refused_on_its_line(tmp_path: Path, entry: str, reason: str) -> None:
    text = with_keys("demo", ["other", entry])
    with pytest.raises(PolicySchemaError) as info:
        load_text(tmp_path, text)
    assert (info.value.line, info.value.field) == (position_of(text, f"- {entry}")[0], "excludes.1")
    assert reason in info.value.reason


def test_excludes_must_be_a_list(tmp_path: Path) -> None:
    text = policy_yaml(["si.layoffs > 1"]).replace(ANCHOR, ANCHOR + "excludes: other\n")
    with pytest.raises(PolicySchemaError) as info:
        load_text(tmp_path, text)
    assert (info.value.line, info.value.field) == (position_of(text, "excludes:")[0], "excludes")


def test_a_single_file_cannot_know_the_other_ids_and_does_not_refuse_them(tmp_path: Path) -> None:
    text = with_keys("demo", ["no-such-policy"])
    path = write_policy(tmp_path, text)
    assert load_policy_file(path, CATALOGUE, require_tests=False).excludes == ("no-such-policy",)
    replayed = load_policy_text(text.encode(), CATALOGUE, origin="policy_version 0123")
    assert replayed.excludes == ("no-such-policy",)
    assert load_dir(path).excluded("demo") == {"no-such-policy"}  # a file given as the root


# --- against the directory --------------------------------------------------------------------


def test_an_unknown_excluded_id_is_refused_with_its_line_and_nothing_is_loaded(tmp_path: Path) -> None:
    text = with_keys("alpha", ["beta", "gamma"])
    root = directory(tmp_path, {"alpha": text, "beta": with_keys("beta")})
    with pytest.raises(PolicySchemaError) as info:
        load_dir(root)
    error = info.value
    assert (error.file, error.line, error.field) == (
        str(root / "alpha.yaml"),
        position_of(text, "- gamma")[0],
        "excludes.1",
    )
    assert "excludes 'gamma', which is not a loaded policy" in error.reason
    assert f"alpha.yaml:{error.line}: excludes.1:" in str(error)


def test_an_unknown_excluded_id_suggests_a_near_one(tmp_path: Path) -> None:
    root = directory(tmp_path, {"alpha": with_keys("alpha", ["betta"]), "beta": with_keys("beta")})
    with pytest.raises(PolicySchemaError, match=r"did you mean 'beta'\?"):
        load_dir(root)


def test_an_exclusion_inside_a_conflict_group_is_refused_on_its_line(tmp_path: Path) -> None:
    text = with_keys("beta", ["alpha"], group="titles")
    root = directory(tmp_path, {"alpha": with_keys("alpha", group="titles"), "beta": text})
    with pytest.raises(PolicySchemaError) as info:
        load_dir(root)
    error = info.value
    assert (error.file, error.line) == (str(root / "beta.yaml"), position_of(text, "- alpha")[0])
    assert "same conflict group 'titles'" in error.reason


def test_an_exclusion_across_conflict_groups_is_accepted(tmp_path: Path) -> None:
    root = directory(
        tmp_path,
        {
            "alpha": with_keys("alpha", ["beta"], group="one"),
            "beta": with_keys("beta", group="two"),
            "gamma": with_keys("gamma", ["alpha"]),
        },
    )
    assert load_dir(root).excluded("alpha") == {"beta", "gamma"}


# --- symmetry and families --------------------------------------------------------------------


def test_only_one_side_naming_the_other_excludes_both_ways(tmp_path: Path) -> None:
    root = directory(tmp_path, {"alpha": with_keys("alpha", ["beta"]), "beta": with_keys("beta")})
    policies = load_dir(root)
    assert policies.get("beta").excludes == ()
    assert policies.excluded("alpha") == frozenset({"beta"})
    assert policies.excluded("beta") == frozenset({"alpha"})
    assert policies.exclusion_family("alpha") == policies.exclusion_family("beta") == ("alpha", "beta")


def test_both_sides_naming_each_other_is_the_same_exclusion(tmp_path: Path) -> None:
    root = directory(tmp_path, {"alpha": with_keys("alpha", ["beta"]), "beta": with_keys("beta", ["alpha"])})
    policies = load_dir(root)
    assert (policies.excluded("alpha"), policies.excluded("beta")) == (frozenset({"beta"}), frozenset({"alpha"}))


def test_excluded_is_the_symmetric_closure(tmp_path: Path) -> None:
    root = directory(
        tmp_path,
        {
            "alpha": with_keys("alpha", ["beta", "gamma"]),
            "beta": with_keys("beta"),
            "gamma": with_keys("gamma"),
            "delta": with_keys("delta", ["alpha"]),
            "omega": with_keys("omega"),
        },
    )
    policies = load_dir(root)
    assert policies.excluded("alpha") == frozenset({"beta", "gamma", "delta"})
    assert policies.excluded("beta") == policies.excluded("gamma") == policies.excluded("delta") == frozenset({"alpha"})
    assert policies.excluded("omega") == frozenset()
    assert isinstance(policies.excluded("alpha"), frozenset)


def test_family_of_a_chain(tmp_path: Path) -> None:
    # alpha excludes beta, beta excludes gamma: alpha and gamma may be held together, but all
    # three are one family
    root = directory(
        tmp_path,
        {
            "alpha": with_keys("alpha", ["beta"]),
            "beta": with_keys("beta", ["gamma"]),
            "gamma": with_keys("gamma"),
            "omega": with_keys("omega"),
        },
    )
    policies = load_dir(root)
    assert policies.excluded("alpha") == {"beta"}
    assert policies.excluded("beta") == {"alpha", "gamma"}
    assert policies.excluded("gamma") == {"beta"}
    for policy_id in ("alpha", "beta", "gamma"):
        assert policies.exclusion_family(policy_id) == ("alpha", "beta", "gamma")
    assert policies.exclusion_family("omega") == ("omega",)


def test_unknown_policy_id_is_not_found(tmp_path: Path) -> None:
    policies = load_dir(directory(tmp_path, {"alpha": with_keys("alpha")}))
    with pytest.raises(PolicyNotFoundError):
        policies.excluded("nope")
    with pytest.raises(PolicyNotFoundError):
        policies.exclusion_family("nope")


def test_the_reference_pack_has_no_exclusions() -> None:
    # rules/policies: no published text of the six says two of them never combine; the
    # 小巨人/单项冠军 pair is a conflict group (就高不重复), which an exclusion would contradict
    policies = shipped_policies()
    for policy in policies:
        assert policies.excluded(policy.id) == frozenset()
        assert policies.exclusion_family(policy.id) == (policy.id,)


# --- a reload with a broken exclusion keeps serving -------------------------------------------


@pytest.mark.parametrize(
    ("target", "entry", "reason"),
    [
        ("stable-jobs-refund.yaml", "stable-jobs-refnud", "not a loaded policy"),
        ("stable-jobs-refund.yaml", "stable-jobs-refund", "cannot exclude itself"),
        ("little-giant-reward.yaml", "single-champion-reward", "same conflict group"),
    ],
)
def test_reload_with_a_broken_exclusion_keeps_the_running_set(
    tmp_path: Path, target: str, entry: str, reason: str
) -> None:
    root = tmp_path / "policies"
    shutil.copytree(POLICIES_DIR, root)
    store = PolicyStore(root, CATALOGUE)
    before = store.current

    path = root / target
    original = path.read_text(encoding="utf-8")
    assert "\nexcludes:" not in original
    broken = original.replace("\nfact_year:", f"\nexcludes:\n  - {entry}\nfact_year:", 1)
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(PolicySchemaError) as info:
        store.reload()
    assert (info.value.file, info.value.line) == (str(path), position_of(broken, f"- {entry}")[0])
    assert reason in info.value.reason
    assert store.current is before
    running = store.current.get("stable-jobs-refund")
    assert evaluate(running.compiled(2025), stable_document(), today=TODAY).outcome == Outcome.ELIGIBLE

    path.write_text(original.replace("\nfact_year:", "\nexcludes: [high-tech-reward]\nfact_year:", 1), encoding="utf-8")
    fresh = store.reload()
    assert store.current is fresh is not before
    changed = path.name.removesuffix(".yaml")
    assert fresh.excluded("high-tech-reward") == {changed}
    assert fresh.exclusion_family(changed) == tuple(sorted((changed, "high-tech-reward")))
