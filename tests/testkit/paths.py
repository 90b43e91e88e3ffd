"""Where the repository's files are, for tests that read policies or start `benefits` there."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = REPO_ROOT / "rules"
POLICIES_DIR = RULES_DIR / "policies"
