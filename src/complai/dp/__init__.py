"""Differential privacy: accounting and the privacy budget (queries and training follow)."""
