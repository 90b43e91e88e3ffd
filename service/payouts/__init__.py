"""Payout batches: grants once per (enterprise, policy, period), budgets, stacking, exports."""
