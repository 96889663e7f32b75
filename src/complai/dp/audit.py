"""Membership-inference audits of trained models: does the model leak who was in its training data?

Two attacks, both scoring every subject of the model's dataset (members: the model's training subjects;
non-members: the held-out subjects and anyone who never trained it):

- loss threshold (Yeom et al. 2018): members tend to have lower loss; score = -loss;
- LiRA (Carlini et al. 2022, online, fixed variance): K shadow models trained with the target's own
  recipe (architecture, optimizer, epochs, batch size and, for a DP target, its noise multiplier and
  clipping norm) on random halves of the data; for each example the logit-scaled confidence of its true
  label is modelled as Gaussian over the shadows that saw it and over those that did not; the score is
  the likelihood ratio of the target's confidence under the two.

For each attack: ROC AUC, TPR at 1% and 0.1% FPR, and an empirical epsilon: any (epsilon, delta)-DP
training forces TPR <= e^eps FPR + delta and TNR <= e^eps FNR + delta for every threshold, so a threshold
chosen on one half of the examples and evaluated on the other, with Clopper-Pearson 95% bounds on its
rates, gives eps >= max(ln((TPR_lo - delta) / FPR_hi), ln((TNR_lo - delta) / FNR_hi)). It is a
statistical lower bound on what the attack demonstrates, not a certified bound on the mechanism (the
examples share one training run); set next to the claimed epsilon it says whether the attack saw more
than the guarantee permits. The largest AUC any attack can reach against (eps, delta)-DP is reported too.

The audit reads the data under the model's training purpose and trains shadow models that are never
stored or released; its report holds only aggregate rates.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import log_softmax
from scipy.stats import beta, norm

from complai.dp.features import auc
from complai.dp.models import Models
from complai.dp.training import SUBJECT, Progress, TrainingSpec, fit, one_per_subject, predict, prepare
from complai.errors import InvalidInput
from complai.vault.schema import DatasetSchema

CONFIDENCE = 0.95


def true_class_logit(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """log(p_y / (1 - p_y)), computed stably: z_y - logsumexp(z_not_y)."""
    z = logits.astype(np.float64)
    zy = z[np.arange(len(y)), y]
    others = z.copy()
    others[np.arange(len(y)), y] = -np.inf
    m = others.max(axis=1)
    logit: np.ndarray = zy - (m + np.log(np.exp(others - m[:, None]).sum(axis=1)))
    return logit


def losses(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    loss: np.ndarray = -log_softmax(logits.astype(np.float64), axis=1)[np.arange(len(y)), y]
    return loss


def tpr_at(scores: np.ndarray, member: np.ndarray, fpr: float) -> float:
    """The largest TPR over thresholds whose FPR is at most `fpr`."""
    neg = np.sort(scores[~member])[::-1]
    allowed = math.floor(fpr * len(neg))
    # threshold strictly above the (allowed+1)-th highest non-member score
    thr = neg[allowed] if allowed < len(neg) else -np.inf
    return float((scores[member] > thr).mean())


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def _eps_point(tp: int, fp: int, p: int, n: int, delta: float) -> float:
    tpr, fpr = tp / p, fp / n
    a = math.log((tpr - delta) / fpr) if fpr > 0 and tpr > delta else (math.inf if tpr > delta else 0.0)
    tnr, fnr = 1 - fpr, 1 - tpr
    b = math.log((tnr - delta) / fnr) if fnr > 0 and tnr > delta else (math.inf if tnr > delta else 0.0)
    return max(a, b, 0.0)


def empirical_epsilon(scores: np.ndarray, member: np.ndarray, delta: float, seed: int = 0) -> float:
    """Lower bound on epsilon (95%) from one threshold picked on half the examples, tested on the other."""
    rng = np.random.default_rng(seed)
    half = rng.random(len(scores)) < 0.5
    s_a, m_a, s_b, m_b = scores[half], member[half], scores[~half], member[~half]
    p_a, n_a = int(m_a.sum()), int((~m_a).sum())
    p_b, n_b = int(m_b.sum()), int((~m_b).sum())
    if min(p_a, n_a, p_b, n_b) == 0:
        return 0.0
    best_thr, best = None, -1.0
    for thr in np.unique(np.quantile(s_a, np.linspace(0.005, 0.995, 199))):
        tp, fp = int((s_a[m_a] > thr).sum()), int((s_a[~m_a] > thr).sum())
        # shrink the point estimate the way the test half will (add one of each), so that thresholds
        # resting on a handful of examples do not win
        e = _eps_point(tp + 1, fp + 1, p_a + 2, n_a + 2, delta)
        if e > best:
            best, best_thr = e, thr
    if best_thr is None:
        return 0.0
    tp, fp = int((s_b[m_b] > best_thr).sum()), int((s_b[~m_b] > best_thr).sum())
    # a one-sided 97.5% bound on each rate (each the lower or upper end of a two-sided 95% interval);
    # Bonferroni: both hold together with 95%, and both inequalities below use only these two bounds
    tpr_lo, _ = clopper_pearson(tp, p_b, 1 - CONFIDENCE)
    _, fpr_hi = clopper_pearson(fp, n_b, 1 - CONFIDENCE)
    out = 0.0
    if tpr_lo - delta > 0 and fpr_hi > 0:
        out = max(out, math.log((tpr_lo - delta) / fpr_hi))
    tnr_lo, fnr_hi = 1 - fpr_hi, 1 - tpr_lo
    if tnr_lo - delta > 0 and fnr_hi > 0:
        out = max(out, math.log((tnr_lo - delta) / fnr_hi))
    return out


def max_auc(epsilon: float | None, delta: float) -> float:
    """The largest ROC AUC any membership test can reach against an (epsilon, delta)-DP mechanism:
    the area under min(1, e^eps x + delta, 1 - e^-eps (1 - delta - x))."""
    if epsilon is None or not math.isfinite(epsilon):
        return 1.0
    x = np.linspace(0.0, 1.0, 200_001)
    f = np.minimum.reduce([np.ones_like(x), math.exp(epsilon) * x + delta, 1 - math.exp(-epsilon) * (1 - delta - x)])
    f = np.clip(f, 0.0, 1.0)
    return float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(x)))


def attack_metrics(scores: np.ndarray, member: np.ndarray, delta: float, seed: int) -> dict[str, float]:
    return {
        "auc": auc(scores, member),
        "tpr_at_1pct_fpr": tpr_at(scores, member, 0.01),
        "tpr_at_0.1pct_fpr": tpr_at(scores, member, 0.001),
        "empirical_epsilon": empirical_epsilon(scores, member, delta, seed),
    }


def lira_scores(target: np.ndarray, shadow: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Online LiRA with one variance per side (fixed variance), from shadow confidences [K, n] and
    their membership [K, n]."""
    out_vals, in_vals = shadow[~inside], shadow[inside]
    sd_in = float(np.std(in_vals - _means(shadow, inside)[inside])) if in_vals.size else 1.0
    sd_out = float(np.std(out_vals - _means(shadow, ~inside)[~inside])) if out_vals.size else 1.0
    mu_in = _means(shadow, inside)[0]
    mu_out = _means(shadow, ~inside)[0]
    # examples no shadow saw on one side fall back to that side's overall mean
    mu_in = np.where(np.isnan(mu_in), np.nanmean(mu_in) if np.isfinite(mu_in).any() else 0.0, mu_in)
    mu_out = np.where(np.isnan(mu_out), np.nanmean(mu_out) if np.isfinite(mu_out).any() else 0.0, mu_out)
    sd_in, sd_out = max(sd_in, 1e-6), max(sd_out, 1e-6)
    ratio: np.ndarray = norm.logpdf(target, mu_in, sd_in) - norm.logpdf(target, mu_out, sd_out)
    return ratio


def _means(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-example mean over the shadows selected by mask, broadcast back to [K, n] (NaN when none)."""
    counts = mask.sum(0)
    sums = np.where(mask, values, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return np.broadcast_to(mean, values.shape)


def run_audit(
    models: Models,
    model_id: str,
    frame: pd.DataFrame,
    schema: DatasetSchema,
    shadows: int = 8,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Audit a stored model against the rows of its dataset (a governed frame with the SUBJECT column)."""
    from complai.dp.nets import build  # heavy: imports torch

    if shadows < 0 or shadows > 256:
        raise InvalidInput("shadows must be between 0 and 256")
    module, card = models.load(model_id)
    spec = TrainingSpec.parse(card["spec"])
    members = models.training_subjects(model_id)
    frame = one_per_subject(frame, spec.seed)
    subjects = set(frame[SUBJECT].astype(str))
    non_members = subjects - members
    if not members & subjects or not non_members:
        raise InvalidInput(f"model {model_id}: the dataset no longer holds both members and non-members")
    pool = prepare(schema, frame, spec, held_out=non_members)
    # one dataset in a fixed order: members first
    import torch  # heavy: torch
    from torch.utils.data import Subset, TensorDataset  # heavy: torch

    data = TensorDataset(*[torch.cat([a, b]) for a, b in zip(pool.train.tensors, pool.test.tensors, strict=True)])
    member = np.r_[np.ones(len(pool.train), bool), np.zeros(len(pool.test), bool)]
    y = data.tensors[-1].numpy()
    target_logits = predict(module, data)
    privacy = card["privacy"]
    delta = privacy.get("delta") or 1e-5
    claimed = privacy.get("epsilon") if privacy.get("private") else None
    results = {"loss": attack_metrics(-losses(target_logits, y), member, delta, seed)}
    if shadows:
        rng = np.random.default_rng(seed)
        confidences, inside = [], []
        for k in range(shadows):
            pick = rng.random(len(data)) < 0.5
            subset = Subset(data, np.flatnonzero(pick).tolist())
            shadow_spec = spec.model_copy(update={"seed": spec.seed + 1000 + k})
            result = fit(
                build(card["architecture"]),
                subset,
                shadow_spec,
                noise_multiplier=privacy.get("noise_multiplier") if privacy.get("private") else None,
            )
            confidences.append(true_class_logit(predict(result.module, data), y))
            inside.append(pick)
            if progress is not None:
                progress(k + 1, shadows)
        scores = lira_scores(true_class_logit(target_logits, y), np.stack(confidences), np.stack(inside))
        results["lira"] = attack_metrics(scores, member, delta, seed)
    emp = max(r["empirical_epsilon"] for r in results.values())
    best_auc = max(r["auc"] for r in results.values())
    bound = max_auc(claimed, delta)
    if claimed is None:
        verdict = "membership signal" if emp > 0 else "no membership signal found"
    else:
        verdict = "consistent with the claimed epsilon" if emp <= claimed and best_auc <= bound else "exceeds the claim"
    return {
        "model_id": model_id,
        "private": bool(privacy.get("private")),
        "claimed_epsilon": claimed,
        "delta": delta,
        "members": int(member.sum()),
        "non_members": int((~member).sum()),
        "shadow_models": shadows,
        "attacks": results,
        "empirical_epsilon": emp,
        "max_auc_allowed": bound,
        "verdict": verdict,
        "confidence": CONFIDENCE,
        "seed": seed,
    }
