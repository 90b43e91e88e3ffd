"""A restore statement: a line of the checkpoints file, signed by the ledger key's holder, saying
that the database was restored from a backup and which checkpoints that abandons.

A restored ledger is older (shorter) than the newest checkpoint, and verification rightly calls
that a cut tail. The statement makes the cut a signed act: the restored ledger held
`restored_entry_count` entries ending in `restored_head_hash`; the newest checkpoint it still
matches; every newer checkpoint, now abandoned; when, by whom and why. The same statement is
sealed as the ledger entry right after the restore point (kind `RESTORE_KIND`), so the restored
ledger carries it in its chain. `benefits audit restore` (`service/audit/restore.py`) makes
one; `checkpoints.verify_checkpoints` checks it. See docs/operations.md, "Backup and restore".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from service.audit.canonical import canonical_json

RESTORE_KIND = "ledger_restore"
"""The statement's `kind` in the checkpoints file and the kind of its ledger entry."""


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint named by a restore statement: its entry count, head hash and signing time."""

    entry_count: int
    head_hash: str
    signed_at: str

    @classmethod
    def from_data(cls, data: Any, where: str) -> CheckpointRef:
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict) or sorted(data) != sorted(names):
            raise ValueError(f"{where}: expected an object with exactly {', '.join(names)}")
        if type(data["entry_count"]) is not int or data["entry_count"] < 0:
            raise ValueError(f"{where}: entry_count is not a count")
        if not isinstance(data["head_hash"], str) or not isinstance(data["signed_at"], str):
            raise ValueError(f"{where}: head_hash and signed_at must be text")
        return cls(**data)


@dataclass(frozen=True)
class RestoreStatement:
    """The restored ledger held `restored_entry_count` entries, the last `restored_head_hash`;
    its statement is sealed as entry `restored_entry_count + 1` (`restore_entry_seq`)."""

    restored_entry_count: int
    restored_head_hash: str
    matches_checkpoint: CheckpointRef | None  # the newest checkpoint the restored ledger holds
    abandoned_checkpoints: tuple[CheckpointRef, ...]  # every newer one, in file order
    restored_at: str
    restored_by: str
    reason: str
    key_id: str  # SHA-256 of the raw public key, hex
    signature: str  # base64 Ed25519 signature over `signed_bytes()`

    @property
    def restore_entry_seq(self) -> int:
        return self.restored_entry_count + 1

    def unsigned_data(self) -> dict[str, Any]:
        data = self.data()
        del data["signature"]
        return data

    def signed_bytes(self) -> bytes:
        return canonical_json(self.unsigned_data())

    def data(self) -> dict[str, Any]:
        """The statement as one JSON object: the line in the file and the ledger entry's payload."""
        data = asdict(self)
        data["abandoned_checkpoints"] = [asdict(ref) for ref in self.abandoned_checkpoints]
        return {"kind": RESTORE_KIND, **data}

    def to_json(self) -> str:
        return json.dumps(self.data(), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_data(cls, data: Any) -> RestoreStatement:
        """Parse a decoded line or payload; ValueError saying what is wrong with it."""
        names = ["kind"] + [f.name for f in fields(cls)]
        if not isinstance(data, dict) or sorted(data) != sorted(names):
            raise ValueError(f"expected a restore statement with exactly {', '.join(names)}")
        if data["kind"] != RESTORE_KIND:
            raise ValueError(f"kind must be {RESTORE_KIND!r}")
        if type(data["restored_entry_count"]) is not int or data["restored_entry_count"] < 0:
            raise ValueError("restored_entry_count is not a count")
        text_fields = ["restored_head_hash", "restored_at", "restored_by", "reason", "key_id", "signature"]
        wrong = [name for name in text_fields if not isinstance(data[name], str)]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} must be text")
        if not isinstance(data["abandoned_checkpoints"], list):
            raise ValueError("abandoned_checkpoints must be a list")
        matched = data["matches_checkpoint"]
        return cls(
            restored_entry_count=data["restored_entry_count"],
            restored_head_hash=data["restored_head_hash"],
            matches_checkpoint=None if matched is None else CheckpointRef.from_data(matched, "matches_checkpoint"),
            abandoned_checkpoints=tuple(
                CheckpointRef.from_data(ref, f"abandoned_checkpoints[{i}]")
                for i, ref in enumerate(data["abandoned_checkpoints"])
            ),
            **{name: data[name] for name in ["restored_at", "restored_by", "reason", "key_id", "signature"]},
        )


def is_restore_line(data: Any) -> bool:
    """A line of the checkpoints file that claims to be a restore statement (checkpoints have no kind)."""
    return isinstance(data, dict) and "kind" in data
