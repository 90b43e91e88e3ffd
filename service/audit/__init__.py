"""The audit trail: canonical JSON, the hash-chained ledger, signed checkpoints, Merkle proofs."""
