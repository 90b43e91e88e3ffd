"""Renders evaluations for people (Chinese explanations) and for programs (JSON)."""

from __future__ import annotations

from typing import Any

from rules.evaluator import ClauseResult, Evaluation, TermRead
from rules.money import format_yuan
from rules.values import Outcome, Truth

OUTCOME_ZH = {
    Outcome.ELIGIBLE: "符合条件（免申即享）",
    Outcome.INELIGIBLE: "不符合条件",
    Outcome.UNDETERMINED: "暂无法判定（数据缺失或过期）",
    Outcome.HELD: "符合条件但暂缓拨付",
}
RESULT_ZH = {Truth.TRUE: "✔ 满足", Truth.FALSE: "✘ 不满足", Truth.UNKNOWN: "？ 无法判定"}
_JSON_RESULT = {Truth.TRUE: True, Truth.FALSE: False, Truth.UNKNOWN: None}


def as_json(evaluation: Evaluation, title: str | None = None) -> dict[str, Any]:
    """The evaluation as one JSON object. A condition's `result` is true, false or null
    (unknown); `result_text` spells it out."""
    data = evaluation.to_dict()
    data["title"] = title
    for key in ("conditions", "payable"):
        for clause in data[key]:
            clause["result_text"] = clause["result"]
            clause["result"] = _JSON_RESULT[clause["result"]]
    return data


def as_text(evaluation: Evaluation, title: str) -> str:
    """A readable Chinese explanation of one evaluation."""
    e = evaluation
    lines = [
        f"{title}（{e.policy_id} 版本 {e.policy_version}）",
        f"企业：{e.uscc}　政策期间：{e.period} 年　数据年度：{e.fact_year} 年　评估日期：{e.evaluated_on}",
        f"结果：{OUTCOME_ZH[e.outcome]}",
    ]
    if e.outcome in (Outcome.ELIGIBLE, Outcome.HELD):
        lines.append(f"金额：{format_yuan(e.amount_fen)}（{e.amount_fen} 分）")
    lines.append("")
    lines.append("条件：")
    lines.extend(_clause(c) for c in e.conditions)
    if e.payable and e.outcome in (Outcome.ELIGIBLE, Outcome.HELD):
        lines.append("拨付条件：")
        lines.extend(_clause(c) for c in e.payable)
    if e.missing:
        lines.append("缺失或过期的数据：" + "、".join(e.missing))
    if e.held:
        lines.append("暂缓拨付原因：" + "、".join(c.text for c in e.payable if c.id in e.held))
    if e.amount is not None:
        lines.append(f"金额计算：{e.amount.text}")
        if e.amount.exact is not None:
            lines.append(
                f"　精确值 {e.amount.exact} 分，按分{'四舍五入' if e.amount.rounding == 'half_up' else '舍去'}"
                f" → {e.amount_fen} 分"
            )
        lines.extend(f"　{_term(t)}" for t in e.amount.terms)
        lines.extend(f"　{n}" for n in e.amount.notes)
    lines.append(f"规则文件 SHA-256：{e.rule_sha256}")
    return "\n".join(lines)


def _clause(clause: ClauseResult) -> str:
    out = [f"  [{RESULT_ZH[clause.result]}] {clause.id}：{clause.text}（依据：{clause.citation}）"]
    out.extend(f"      {_term(t)}" for t in clause.terms)
    for read in clause.reads:
        if read.missing is not None:
            out.append(f"      {read.label}（{read.name}）：缺失 — {read.missing}")
        else:
            out.append(
                f"      {read.label}（{read.name}）= {_value(read.value)}　来源 {read.source}，截至 {read.as_of}"
            )
    for coll in clause.collections:
        out.append(
            f"      {coll.label}（{coll.name}）：共 {coll.records} 条，符合 {len(coll.matched)} 条"
            + (f"：{', '.join(coll.matched[:10])}" if coll.matched else "")
        )
    out.extend(f"      注：{note}" for note in clause.notes)
    return "\n".join(out)


def _term(term: TermRead) -> str:
    value = "无法确定（所需数据缺失）" if term.value is None else _value(term.value)
    return f"{term.text}（{term.name}）= {value}"


def _value(value: object) -> str:
    if value is True:
        return "是"
    if value is False:
        return "否"
    return str(value)
