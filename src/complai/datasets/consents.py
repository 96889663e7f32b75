"""Seeded consent records for the bundled data, so governed reads have something to filter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

# share of subjects who consented to each consent-based purpose of the Adult schema
ADULT_CONSENT_RATES = {"credit_scoring": 0.85, "train_ai_system": 0.70, "federated_training": 0.60}
WITHDRAWN_SHARE = 0.03


def adult_consents(subject_ids: pd.Series, seed: int = 2024, now: datetime | None = None) -> pd.DataFrame:
    """One row per (subject, purpose) granted; a few withdrawn later. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    now = now or datetime.now(UTC)
    frames = []
    n = len(subject_ids)
    for purpose, rate in ADULT_CONSENT_RATES.items():
        mask = rng.random(n) < rate
        granted_days = rng.integers(30, 700, size=n)
        withdrawn = rng.random(n) < WITHDRAWN_SHARE
        ids = subject_ids.to_numpy()[mask]
        g = granted_days[mask]
        w = withdrawn[mask]
        frames.append(
            pd.DataFrame(
                {
                    "subject": ids,
                    "purpose": purpose,
                    "granted_at": [(now - timedelta(days=int(d))).isoformat() for d in g],
                    "withdrawn_at": [
                        (now - timedelta(days=int(d) // 2)).isoformat() if x else None
                        for d, x in zip(g, w, strict=True)
                    ],
                    "notice_version": "privacy-notice-2024-03",
                    "source": "onboarding-form",
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
