"""Governed data: dataset catalogue and schemas (subjects, consent, encrypted records follow)."""
