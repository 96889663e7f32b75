"""Compliance: controls tested mechanically against the workspace and its ledger, and audit reports."""
