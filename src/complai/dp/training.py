"""Differentially private model training (DP-SGD through Opacus), model cards and the model registry.

`session.train(dataset, model=..., target_epsilon=E, delta=D, ...)` (or `complai train SPEC.yaml`):

1. the spec is checked and the dataset's budget is checked for `target_epsilon` before any data is read;
2. the governed read (purpose-bound, consent-filtered, de-identified as the dataset requires for the
   purpose) is recorded; each subject contributes at most one record, so the guarantee is per subject;
3. features come from the declared schema (features.py), never fitted on the data;
4. a private run's plan (private_plan) comes from public inputs only: Poisson sampling at
   q = 1 / ceil(B / batch_size), B the dataset's size bound (its subjects rounded up to a power of two),
   its steps and the noise multiplier that reaches the target; the budget is reserved (atomically, with a
   dp.spent event) before anything is computed from the data: a run that would overspend is refused there;
5. training (ghost clipping where the model allows it), evaluation on the held-out subjects, and the
   model's weights (safetensors), card (JSON + Markdown) and training-subject list are stored with a
   model.trained event whose digests bind them.

Accountant: PRV (Gopi et al. 2021) by default. It computes the privacy curve of the subsampled Gaussian
numerically and reports a certified upper bound on epsilon (its `eps_upper`), which for DP-SGD is
tighter than RDP's conversion (on q=256/60000, sigma 1.1, 60 epochs, delta 1e-5: 2.39 vs 2.60), so the
same budget buys less noise. RDP (Mironov 2017) is available for comparison with published numbers.
Either way the card's epsilon is recomputed from (noise multiplier, sample rate, steps) by a fresh
accountant: `recompute_epsilon(card)`.
"""

from __future__ import annotations

import hashlib
import html
import itertools
import json
import math
import os
import secrets
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
import rfc8785
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from complai.crypto.digest import digest
from complai.dp.accounting import finite
from complai.dp.features import Labels, TabularFeatures, auc
from complai.errors import IntegrityError, InvalidInput, NotFound
from complai.inputs import parse_yaml, read_text_input
from complai.vault.schema import DatasetSchema, DeidSpec

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch.utils.data import Subset, TensorDataset

    Examples = TensorDataset | Subset[tuple[Tensor, ...]]

Progress = Callable[[int, int], None]

SUBJECT = "__subject__"  # the pseudonym column governed training reads carry
MODEL_FILE, CARD_JSON, CARD_MD = "model.safetensors", "card.json", "card.md"


# Limits a spec is checked against before any data is read: beyond them a run cannot finish on one
# machine (memory) or its privacy accounting has no meaningful answer (epsilon).
MAX_WIDTH, MAX_LAYERS = 4096, 8
MAX_PARAMETERS = 20_000_000
MAX_GRAD_SAMPLE_BYTES = 4 << 30  # per-sample gradients of one batch under hooks clipping
MIN_EPSILON, MAX_EPSILON = 0.01, 100.0


class TrainingSpec(BaseModel):
    """What to train, on which data, under which privacy parameters (the YAML of `complai train`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: str
    label: str
    features: list[str] | None = None
    # the date a date feature's age is taken at (required when one is used; never "today")
    reference_date: date | None = None
    text: str | None = None
    model: Literal["logreg", "mlp", "bert"] = "logreg"
    hidden: list[Annotated[int, Field(ge=1, le=MAX_WIDTH)]] = Field([64, 64], min_length=1, max_length=MAX_LAYERS)
    encoder: Literal["minilm", "tiny"] = "minilm"
    trainable_layers: int = Field(2, ge=0, le=64)
    max_length: int = Field(64, ge=8, le=512)
    private: bool = True
    target_epsilon: float | None = Field(None, ge=MIN_EPSILON, le=MAX_EPSILON)
    delta: float | None = Field(None, gt=0, lt=1)
    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(256, ge=1, le=1_000_000)
    max_grad_norm: float = Field(1.0, gt=0, le=1e4)
    optimizer: Literal["adam", "sgd"] = "adam"
    learning_rate: float = Field(0.01, gt=0, le=10)
    accountant: Literal["prv", "rdp"] = "prv"
    clipping: Literal["ghost", "hooks"] = "ghost"
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(0, ge=0, lt=2**63)
    name: str | None = Field(None, max_length=128)
    # what the model is for and where it must not be relied on: shown on the card (a card without an
    # intended use carries a warning saying so)
    intended_use: str | None = Field(None, min_length=1, max_length=2000)
    limitations: list[Annotated[str, Field(min_length=1, max_length=2000)]] = Field([], max_length=50)

    @model_validator(mode="after")
    def _consistent(self) -> TrainingSpec:
        if self.private and self.target_epsilon is None:
            raise ValueError("a private run needs target_epsilon")
        if not self.private and self.target_epsilon is not None:
            raise ValueError("target_epsilon applies to private runs only")
        if self.model == "bert" and not self.text:
            raise ValueError("a bert model needs the text field (text: FIELD)")
        if self.model != "bert" and self.text:
            raise ValueError("a text field needs model: bert")
        return self

    @classmethod
    def parse(cls, data: dict[str, Any]) -> TrainingSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "spec"
            raise InvalidInput(f"training spec: {where}: {err['msg']}".replace("\n", " ")) from None

    @classmethod
    def load(cls, path: Path | str) -> TrainingSpec:
        data = parse_yaml(read_text_input(path, "training spec"), f"training spec {Path(path).name}")
        if not isinstance(data, dict):
            raise InvalidInput(f"training spec {path} must be a mapping")
        return cls.parse(data)


def check_size(spec: TrainingSpec, inputs: int, classes: int) -> int:
    """The parameter count of a tabular model; InvalidInput when it, or the per-sample gradients
    one batch needs, would not fit the limits above (checked before any data is read)."""
    widths = [inputs, *(spec.hidden if spec.model == "mlp" else []), classes]
    params = sum((a + 1) * b for a, b in itertools.pairwise(widths))
    if params > MAX_PARAMETERS:
        raise InvalidInput(
            f"training spec: a {spec.model} of {params:,} parameters is larger than the {MAX_PARAMETERS:,} "
            "parameters allowed; use smaller hidden layers"
        )
    if spec.private and spec.clipping == "hooks" and params * spec.batch_size * 4 > MAX_GRAD_SAMPLE_BYTES:
        raise InvalidInput(
            f"training spec: per-sample gradients of {params:,} parameters for a batch of {spec.batch_size} "
            f"need more than {MAX_GRAD_SAMPLE_BYTES >> 30} GiB; use a smaller batch_size or clipping: ghost"
        )
    return params


# --- data ------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """Tensors for training and held-out evaluation, and what the card says about them."""

    arch: dict[str, Any]
    train: TensorDataset
    test: TensorDataset
    train_subjects: list[str]
    test_subjects: list[str]
    preprocessing: dict[str, Any]
    classes: list[Any]
    # the held-out rows' sensitive attributes (fairness_attributes), in the order of `test`
    test_attributes: pd.DataFrame = field(default_factory=pd.DataFrame)


def one_per_subject(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """At most one record per subject (a random one), so per-record DP is per-subject DP."""
    shuffled = frame.sample(frac=1.0, random_state=seed)
    return shuffled.drop_duplicates(SUBJECT).sort_values(SUBJECT, kind="stable").reset_index(drop=True)


def split_subjects(subjects: list[str], fraction: float, seed: int) -> set[str]:
    """The held-out subjects: a keyed hash of (seed, pseudonym) below `fraction`, so the split is
    reproducible from the card and independent of the data's order."""
    cut = int(fraction * 2**64)
    key = str(seed).encode()
    return {
        s for s in subjects if int.from_bytes(hashlib.blake2b(s.encode(), key=key, digest_size=8).digest(), "big") < cut
    }


def prepare(
    schema: DatasetSchema, frame: pd.DataFrame, spec: TrainingSpec, held_out: set[str] | None = None
) -> Prepared:
    """Features and labels (from the schema), split by subject into training and held-out sets."""
    import torch  # heavy: torch
    from torch.utils.data import TensorDataset  # heavy: torch

    labels = Labels(schema, spec.label)
    frame = frame[labels.known(frame)].reset_index(drop=True)
    subjects = frame[SUBJECT].astype(str).tolist()
    if held_out is None:
        held_out = split_subjects(subjects, spec.test_fraction, spec.seed)
    is_test = np.array([s in held_out for s in subjects], dtype=bool)
    if is_test.all() or not is_test.any():
        # no count here: on a private run this message reaches principals who may not learn the size
        raise InvalidInput(
            f"the split at test_fraction {spec.test_fraction:g} left the training or the held-out set empty: "
            "too few labelled subjects; use a test_fraction nearer 0.5 or a larger dataset"
        )
    y = torch.from_numpy(labels.transform(frame))
    classes = len(labels.classes)
    if spec.model == "bert":
        assert spec.text is not None
        if schema.field(spec.text).type not in ("text", "string"):
            raise InvalidInput(f"field {spec.text} is not text")
        tok = _tokenizer()
        enc = tok(
            frame[spec.text].fillna("").astype(str).tolist(),
            padding="max_length",
            truncation=True,
            max_length=spec.max_length,
            return_tensors="pt",
        )
        tensors = [enc["input_ids"], enc["attention_mask"]]
        arch: dict[str, Any] = {
            "architecture": "bert",
            "encoder": spec.encoder,
            "classes": classes,
            "trainable_layers": spec.trainable_layers,
            "max_length": spec.max_length,
            "text": spec.text,
        }
        prep: dict[str, Any] = {"text": spec.text, "tokenizer": "all-MiniLM-L6-v2 WordPiece (public vocabulary)"}
    else:
        names = spec.features or default_features(schema, spec.label)
        if spec.label in names:
            raise InvalidInput(f"the label {spec.label} cannot also be a feature")
        feats = TabularFeatures(schema, names, spec.reference_date)
        tensors = [torch.from_numpy(feats.transform(frame))]
        arch = {"architecture": spec.model, "inputs": feats.dim, "classes": classes, "features": names}
        if spec.model == "mlp":
            arch["hidden"] = list(spec.hidden)
        prep = {"features": feats.describe()}
    train_idx = torch.from_numpy(np.flatnonzero(~is_test))
    test_idx = torch.from_numpy(np.flatnonzero(is_test))
    sensitive = [c for c in fairness_attributes(schema, spec.label) if c in frame.columns]
    return Prepared(
        arch=arch,
        train=TensorDataset(*[t[train_idx] for t in tensors], y[train_idx]),
        test=TensorDataset(*[t[test_idx] for t in tensors], y[test_idx]),
        train_subjects=[subjects[i] for i in train_idx.tolist()],
        test_subjects=[subjects[i] for i in test_idx.tolist()],
        preprocessing=prep,
        classes=[str(c) for c in labels.classes],
        test_attributes=frame.loc[is_test, sensitive].reset_index(drop=True),
    )


_TOKENIZER: Any = None


def _tokenizer() -> Any:
    global _TOKENIZER
    if _TOKENIZER is None:
        from complai.dp.nets import tokenizer  # heavy: imports torch and transformers

        _TOKENIZER = tokenizer()
    return _TOKENIZER


def default_features(schema: DatasetSchema, label: str) -> list[str]:
    """Every field a tabular model can take, except the label, identifiers' direct kind and free text."""
    return [
        f.name
        for f in schema.fields
        if f.name not in (label, schema.subject_column)
        and f.identifier != "direct"
        and f.type in ("integer", "float", "boolean", "category")
    ]


def trim_collate(batch: list[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
    """Stack a batch; for token inputs cut the padding to the batch's longest sequence."""
    import torch  # heavy: torch

    if not batch:
        raise InvalidInput("empty batch")
    cols = [torch.stack([b[i] for b in batch]) for i in range(len(batch[0]))]
    if len(cols) == 3:  # input_ids, attention_mask, label
        longest = max(int(cols[1].sum(1).max()), 1)
        cols[0], cols[1] = cols[0][:, :longest].contiguous(), cols[1][:, :longest].contiguous()
    return tuple(cols)


# --- training --------------------------------------------------------------------------------------


def size_bound(n: int) -> int:
    """The least power of two at or above n (0 for none): the public stand-in for a dataset's size that
    a private run uses wherever it needs one (delta's check, the sampling rate, the steps)."""
    return 1 << (n - 1).bit_length() if n > 0 else 0


@dataclass(frozen=True)
class PrivatePlan:
    """A private run's DP-SGD parameters, every one a function of public inputs only (the spec and the
    size bound): Poisson sampling at rate 1 / ceil(bound / batch_size) for `steps` steps at
    `noise_multiplier`, costing `epsilon` at the spec's delta. Nothing in it (nor in the progress a run
    reports, nor in the card's privacy block) depends on how many subjects the read returned."""

    population: int
    batches: int
    sample_rate: float
    steps: int
    noise_multiplier: float
    epsilon: float

    @property
    def expected_batch_size(self) -> float:
        return self.population * self.sample_rate


def private_plan(spec: TrainingSpec, population: int) -> PrivatePlan:
    """The plan of a private run over at most `population` subjects (a public bound, see size_bound);
    InvalidInput when no noise level reaches the spec's target epsilon."""
    from opacus.accountants.utils import get_noise_multiplier  # heavy: opacus

    assert spec.private and spec.target_epsilon is not None and spec.delta is not None
    if population <= 0:
        raise InvalidInput(f"dataset {spec.dataset} has no subjects to train on")
    batches = max(1, math.ceil(population / spec.batch_size))
    q = 1 / batches
    steps = spec.epochs * int(1 / q)  # per epoch as Opacus's Poisson sampler draws them: int(1 / q)
    try:
        sigma = float(
            get_noise_multiplier(
                target_epsilon=spec.target_epsilon,
                target_delta=spec.delta,
                sample_rate=q,
                steps=steps,
                accountant=spec.accountant,
            )
        )
    except ValueError as exc:  # Opacus: no noise multiplier reaches the target
        raise InvalidInput(
            f"target_epsilon {spec.target_epsilon:g} cannot be reached with {spec.epochs} epochs of "
            f"batch_size {spec.batch_size}: {str(exc).splitlines()[0] if str(exc) else 'no noise level fits'}"
        ) from None
    eps = planned_epsilon(spec.accountant, sigma, q, steps, spec.delta)
    return PrivatePlan(population, batches, q, steps, sigma, eps)


class _Batches:
    """A batch sampler of a fixed (public) length: Opacus derives its Poisson rate from the length of
    the loader it wraps (1 / len), and it never iterates this one."""

    def __init__(self, batches: int) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter([[0]] * self.batches)


@dataclass
class FitResult:
    module: nn.Module  # the trained module (unwrapped)
    steps: int
    sample_rate: float
    noise_multiplier: float | None = None
    epsilon: float | None = None
    seconds: float = 0.0
    history: list[float] = field(default_factory=list)


def _threads() -> None:
    """Training's threads: one per core up to 8, unless OMP_NUM_THREADS says how many (a machine shared
    with other work: more threads than free cores spin and wait for each other)."""
    import torch  # heavy: torch

    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    if asked.isdigit() and int(asked) > 0:
        torch.set_num_threads(int(asked))
        return
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, 8)))


def fit(
    module: nn.Module,
    train: Examples,
    spec: TrainingSpec,
    *,
    noise_multiplier: float | None = None,
    before_first_step: Callable[[float, float, int], None] | None = None,
    progress: Progress | None = None,
    plan: PrivatePlan | None = None,
) -> FitResult:
    """Train `module` on `train` as `spec` says: DP-SGD (Poisson sampling, per-sample clipping,
    Gaussian noise) when spec.private, plain minibatch training otherwise, with the same optimizer,
    learning rate, epochs and expected batch size. A private run takes its noise multiplier from
    `make_private_with_epsilon` unless one is given (shadow models in audits);
    `before_first_step(noise_multiplier, sample_rate, steps)` runs before any step and may refuse.
    With a `plan` (private_plan), a private run samples, steps, noises and scales its gradients by the
    plan's public parameters only, so neither they nor `progress(step, steps)` depend on len(train)."""

    with warnings.catch_warnings():
        # Opacus's notices (insecure RNG, RDP order range) and torch's full-backward-hook notice under
        # ghost clipping say nothing the card does not
        warnings.filterwarnings("ignore", module="opacus")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        return _fit(module, train, spec, noise_multiplier, before_first_step, progress, plan)


def _fit(
    module: nn.Module,
    train: Examples,
    spec: TrainingSpec,
    noise_multiplier: float | None,
    before_first_step: Callable[[float, float, int], None] | None,
    progress: Progress | None,
    plan: PrivatePlan | None = None,
) -> FitResult:
    import torch  # heavy: torch
    from torch import nn  # heavy: torch
    from torch.utils.data import DataLoader  # heavy: torch

    _threads()
    torch.manual_seed(spec.seed)
    n = len(train)
    if n == 0:
        raise InvalidInput("no training records")
    batch = min(spec.batch_size, n)
    gen = torch.Generator().manual_seed(spec.seed)
    loader: Any
    if plan is not None and spec.private:
        loader = DataLoader(train, batch_sampler=_Batches(plan.batches), generator=gen, collate_fn=trim_collate)
    else:
        loader = DataLoader(train, batch_size=batch, shuffle=True, generator=gen, collate_fn=trim_collate)
    params = [p for p in module.parameters() if p.requires_grad]
    opt_cls = torch.optim.Adam if spec.optimizer == "adam" else torch.optim.SGD
    optimizer = opt_cls(params, lr=spec.learning_rate)
    criterion: Any = nn.CrossEntropyLoss()
    model: Any = module
    engine = None
    sigma = None
    if spec.private:
        from opacus import PrivacyEngine  # heavy: opacus

        engine = PrivacyEngine(accountant=spec.accountant)
        common = {
            "module": module,
            "optimizer": optimizer,
            "data_loader": loader,
            "criterion": criterion,
            "max_grad_norm": spec.max_grad_norm,
            "poisson_sampling": True,
            "grad_sample_mode": spec.clipping,
        }
        if plan is not None:
            out = engine.make_private(**common, noise_multiplier=plan.noise_multiplier)
        elif noise_multiplier is None:
            assert spec.target_epsilon is not None and spec.delta is not None
            try:
                out = engine.make_private_with_epsilon(
                    **common, target_epsilon=spec.target_epsilon, target_delta=spec.delta, epochs=spec.epochs
                )
            except ValueError as exc:  # Opacus: no noise multiplier reaches the target ("budget too low")
                raise InvalidInput(
                    f"target_epsilon {spec.target_epsilon:g} cannot be reached with {spec.epochs} epochs of "
                    f"batch_size {spec.batch_size}: {str(exc).splitlines()[0] if str(exc) else 'no noise level fits'}"
                ) from None
        else:
            out = engine.make_private(**common, noise_multiplier=noise_multiplier)
        if spec.clipping == "ghost":
            model, optimizer, criterion, loader = out
        else:
            model, optimizer, loader = out
        sigma = float(optimizer.noise_multiplier)
        sample_rate = float(loader.sample_rate)
        if plan is not None:
            # Opacus scales the noisy gradient sum by the expected batch n * q: from the public bound instead
            optimizer.expected_batch_size = plan.expected_batch_size
    else:
        sample_rate = batch / n
    total = spec.epochs * len(loader)
    if (
        plan is not None
        and spec.private
        and (sigma, sample_rate, total)
        != (
            plan.noise_multiplier,
            plan.sample_rate,
            plan.steps,
        )
    ):
        raise AssertionError("the private run's sampling differs from its plan")
    if before_first_step is not None:
        before_first_step(sigma or 0.0, sample_rate, total)
    started = time.perf_counter()
    model.train()
    steps = 0
    losses: list[float] = []
    for _ in range(spec.epochs):
        running, seen = 0.0, 0
        for b in loader:
            *xs, y = b
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(*xs), y)
            loss.backward()
            optimizer.step()
            steps += 1
            if len(y):
                running += float(loss.detach()) * len(y)
                seen += len(y)
            if progress is not None:
                progress(steps, total)
        losses.append(running / max(seen, 1))
    seconds = time.perf_counter() - started
    eps = None
    if engine is not None:
        assert spec.delta is not None
        eps = float(engine.accountant.get_epsilon(delta=spec.delta))
    inner = getattr(model, "_module", model)
    inner.eval()
    return FitResult(inner, steps, sample_rate, sigma, eps, seconds, losses)


def predict(module: nn.Module, data: Examples, batch: int = 512) -> np.ndarray:
    """Logits for every example of a TensorDataset (inputs, label)."""
    import torch  # heavy: torch
    from torch.utils.data import DataLoader  # heavy: torch

    module.eval()
    out = []
    with torch.no_grad():
        for b in DataLoader(data, batch_size=batch, collate_fn=trim_collate):
            out.append(module(*b[:-1]).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1), dtype=np.float32)


def labels_of(data: TensorDataset) -> np.ndarray:
    return data.tensors[-1].numpy()


def utility_of(logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Held-out accuracy, cross-entropy, majority-class accuracy and (binary tasks) ROC AUC, from a
    model's logits on the held-out examples and their labels."""
    from scipy.special import log_softmax  # heavy: scipy.special; not loaded until a model is evaluated

    logp = log_softmax(logits, axis=1)
    out = {
        "accuracy": float((logits.argmax(1) == y).mean()),
        "loss": float(-logp[np.arange(len(y)), y].mean()),
        "majority_accuracy": majority_accuracy(y),
        "test_records": len(y),
    }
    if logits.shape[1] == 2:
        out["auc"] = auc(logp[:, 1] - logp[:, 0], y == 1)
    return out


def majority_accuracy(labels: Any) -> float:
    """The accuracy of always predicting the most frequent label: the fraction of that label."""
    values = pd.Series(np.asarray(labels).ravel())
    if values.empty:
        raise InvalidInput("no labels to compare against")
    return float(values.value_counts().iloc[0] / len(values))


def majority_warning(accuracy: float, labels: Any) -> str | None:
    """A warning when `accuracy` is below the majority-class baseline of `labels` (the held-out labels
    the accuracy was measured on), else None. Shared by every kind of model card (central and federated)."""
    return _below_majority(accuracy, majority_accuracy(labels))


def _below_majority(accuracy: float, baseline: float) -> str | None:
    if not accuracy < baseline:
        return None
    digits = 2  # as few digits as tell the two apart
    while digits < 6 and f"{accuracy:.{digits}f}" == f"{baseline:.{digits}f}":
        digits += 1
    return (
        f"held-out accuracy is worse than always predicting the majority class "
        f"({accuracy:.{digits}f} vs {baseline:.{digits}f}): the model has not learnt anything usable"
    )


NO_INTENDED_USE = "no intended use declared (intended_use in the training spec)"


def card_warnings(card: dict[str, Any]) -> list[str]:
    """The card's warnings (cards written before cards carried them: derived from their utility)."""
    if "warnings" in card:
        return [str(w) for w in card["warnings"]]
    u = card.get("utility", {})
    found = _below_majority(u["accuracy"], u["majority_accuracy"]) if "majority_accuracy" in u else None
    return [found] if found else []


# --- fairness --------------------------------------------------------------------------------------

MIN_GROUP_SIZE = 30  # a group's metrics are reported only from this many held-out subjects up
MISSING_GROUP = "(missing)"


def fairness_attributes(schema: DatasetSchema, label: str) -> list[str]:
    """The categorical fields the schema marks sensitive (other than the label): the card reports
    the model's utility per group of each."""
    return [
        f.name
        for f in schema.fields
        if f.sensitive
        and f.name != label
        and (f.type in ("category", "boolean") or (f.type == "string" and f.values is not None))
    ]


def fairness_exclusions(schema: DatasetSchema, label: str, deid: DeidSpec | None) -> dict[str, str]:
    """The sensitive attributes the purpose's de-identification removes or rewrites before training
    (attribute -> why): the card says so instead of computing per-group utility on them."""
    out: dict[str, str] = {}
    if deid is None:
        return out
    for name in fairness_attributes(schema, label):
        f = schema.field(name)
        if name in deid.pseudonymize:
            out[name] = "pseudonymised by the de-identification this purpose requires"
        elif deid.drop_direct_identifiers and f.identifier == "direct":
            out[name] = "dropped by the de-identification this purpose requires (a direct identifier)"
        elif deid.k and f.identifier == "quasi":
            out[name] = f"generalised by the {deid.k}-anonymity this purpose requires (a quasi-identifier)"
    return out


def fairness(
    schema: DatasetSchema,
    spec: TrainingSpec,
    logits: np.ndarray,
    y: np.ndarray,
    attributes: pd.DataFrame,
    excluded: dict[str, str],
    model_inputs: list[str],
    min_group_size: int = MIN_GROUP_SIZE,
) -> dict[str, Any]:
    """Utility per group of each sensitive attribute on the held-out subjects. Groups with fewer than
    `min_group_size` subjects are not reported; when what they leave out together would be smaller than
    that, the smallest reported groups are withheld too, so no small group's size or accuracy can be
    had by subtraction from the overall figures."""
    if len(attributes) != len(y):
        raise AssertionError("one attribute row per held-out example")
    correct = logits.argmax(1) == y
    binary = logits.shape[1] == 2
    score = logits[:, 1] - logits[:, 0] if binary else None
    section: dict[str, Any] = {
        "min_group_size": min_group_size,
        "evaluated_on": "the held-out subjects of the same dataset (the same governed read, not an independent sample)",
        "attributes": {},
    }
    for name in fairness_attributes(schema, spec.label):
        entry: dict[str, Any] = {"model_input": name in model_inputs}
        section["attributes"][name] = entry
        if name in excluded:
            entry.update(status="not computed", reason=excluded[name])
            continue
        if name not in attributes.columns:
            entry.update(status="not computed", reason="not in the governed read for this purpose")
            continue
        keys = attributes[name].map(lambda v: MISSING_GROUP if pd.isna(v) else str(v)).to_numpy()
        groups = sorted(set(keys.tolist()))
        sizes = {g: int((keys == g).sum()) for g in groups}
        shown = [g for g in groups if sizes[g] >= min_group_size]
        left = sum(sizes[g] for g in groups if g not in shown)
        while 0 < left < min_group_size and shown:
            smallest = min(shown, key=lambda g: (sizes[g], g))
            shown.remove(smallest)
            left += sizes[smallest]
        rows = []
        for g in shown:
            mask = keys == g
            row: dict[str, Any] = {
                "group": g,
                "size": sizes[g],
                "accuracy": float(correct[mask].mean()),
                "majority_accuracy": majority_accuracy(y[mask]),
            }
            if score is not None:
                row["auc"] = auc(score[mask], y[mask] == 1)  # NaN (null) when the group has one class
            rows.append(row)
        accs = [r["accuracy"] for r in rows]
        entry.update(
            status="computed",
            groups=rows,
            groups_not_reported=len(groups) - len(shown),
            accuracy_gap=(max(accs) - min(accs)) if len(accs) >= 2 else None,
        )
    return section


def recompute_epsilon(card: dict[str, Any]) -> float:
    """A model card's epsilon from its recorded noise multiplier, sample rate and steps, by a fresh
    Opacus accountant of the recorded kind."""
    from opacus.accountants import create_accountant  # heavy: opacus

    p = card["privacy"]
    acc = create_accountant(p["accountant"])
    acc.history = [(p["noise_multiplier"], p["sample_rate"], p["steps"])]
    return float(acc.get_epsilon(delta=p["delta"]))


def planned_epsilon(accountant: str, sigma: float, sample_rate: float, steps: int, delta: float) -> float:
    from opacus.accountants import create_accountant  # heavy: opacus

    acc = create_accountant(accountant)
    acc.history = [(sigma, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta))


# --- cards -----------------------------------------------------------------------------------------


def hf_metadata(card: dict[str, Any]) -> dict[str, Any]:
    """The card's metadata in the Hugging Face model-card format (the YAML block a model repository's
    README starts with): tags, dataset, metric names, and the held-out results as a model-index."""
    u, d = card["utility"], card["data"]
    private = card["privacy"]["private"]
    task = "text-classification" if card["architecture"].get("architecture") == "bert" else "tabular-classification"
    metrics = [
        {"type": kind, "value": float(u[key]), "name": label}
        for key, kind, label in (("accuracy", "accuracy", "held-out accuracy"), ("auc", "roc_auc", "held-out ROC AUC"))
        if isinstance(u.get(key), int | float) and math.isfinite(u[key])
    ]
    return {
        "tags": ["complai", *(["differential-privacy", "dp-sgd"] if private else ["not-differentially-private"])],
        "pipeline_tag": task,
        "datasets": [d["dataset"]],
        "metrics": [m["type"] for m in metrics],
        "model-index": [
            {
                "name": card["name"],
                "results": [
                    {
                        "task": {"type": task, "name": f"predict {card['task']['label']}"},
                        "dataset": {
                            "type": d["dataset"],
                            "name": f"{d['dataset']} (held-out subjects)",
                            "split": "test",
                        },
                        "metrics": metrics,
                    }
                ],
            }
        ],
    }


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4g}"


def card_markdown(card: dict[str, Any]) -> str:
    """The card for readers: Hugging Face metadata (YAML front matter), then the card in Markdown."""
    p, d, u, a = card["privacy"], card["data"], card["utility"], card["architecture"]
    front = yaml.safe_dump(hf_metadata(card), sort_keys=False, default_flow_style=False, allow_unicode=True)
    lines = ["---", *front.rstrip("\n").split("\n"), "---", ""]
    lines += [
        f"# Model card: {card['name']} ({card['model_id']})",
        "",
        f"Trained {card['created_at']} by {card['created_by']} for purpose `{d['purpose']}` ({d['lawful_basis']}).",
        "",
    ]
    warns = card_warnings(card)
    if warns:
        lines += ["## Warnings", *[f"- **{w}**" for w in warns], ""]
    if "intended_use" in card:
        lines += ["## Intended use", card["intended_use"] or "_Not declared._", ""]
        lines += ["## Limitations", *([f"- {x}" for x in card.get("limitations", [])] or ["_None declared._"]), ""]
    lines += [
        "## Task",
        f"- {card['task']['type']}: predict `{card['task']['label']}` ({', '.join(card['task']['classes'])})",
        f"- architecture: {a['architecture']}"
        + (f" (encoder {a['encoder']}, last {a['trainable_layers']} layers trained)" if "encoder" in a else "")
        + f"; {card['parameters']['total']:,} parameters, {card['parameters']['trainable']:,} trained",
        "",
        "## Data",
        f"- dataset `{d['dataset']}` (schema {d['schema_digest']})",
        (
            f"- {d['training_subjects']:,} training subjects (one record each), {d['test_subjects']:,} held out"
            if "training_subjects" in d
            else f"- one record per subject; no count of subjects is stated (a private run's card gives only the "
            f"public size bound, {p.get('size_bound', 'n/a')})"
        ),
        f"- training manifest digest {d['manifest_digest']}",
        f"- de-identification before training: {json.dumps(d['deidentification'])}",
        "- preprocessing: fixed by the declared schema / public tokenizer (nothing fitted on the data)",
        "",
        "## Privacy",
    ]
    if p["private"]:
        lines += [
            f"- (epsilon, delta) = ({p['epsilon']:.4g}, {p['delta']:.3g}) per subject; accountant {p['accountant']}",
            f"- noise multiplier {p['noise_multiplier']:.6g}, sampling rate {p['sample_rate']:.6g} (Poisson), "
            f"{p['steps']} steps, clipping norm {p['max_grad_norm']:g} ({p['clipping']} clipping)",
        ]
    else:
        lines += ["- **not differentially private**: no formal bound on what the model reveals about its data"]
    lines += [
        "",
        "## Utility (held-out subjects)",
        *[f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in u.items()],
        "",
    ]
    lines += _fairness_markdown(card.get("fairness"))
    lines += [f"Weights: `{MODEL_FILE}` ({card['model_digest']}).", ""]
    return "\n".join(lines)


def _fairness_markdown(section: dict[str, Any] | None) -> list[str]:
    if section is None:
        return []
    out = [
        "## Fairness (utility per group of each sensitive attribute)",
        f"Measured on {section['evaluated_on']}. Only groups of at least {section['min_group_size']} held-out "
        "subjects are reported (smaller ones, and as many more as keep what is left out at that size, are "
        "withheld: these figures are exact, not differentially private, and are released with the model).",
        "",
    ]
    if not section["attributes"]:
        out += ["The schema marks no categorical field sensitive.", ""]
    for name, e in section["attributes"].items():
        role = "a model input" if e["model_input"] else "not a model input; read for this evaluation"
        if e["status"] != "computed":
            out += [f"### `{name}` ({role})", f"Not computed: {e['reason']}.", ""]
            continue
        out += [
            f"### `{name}` ({role})",
            "| group | subjects | accuracy | majority class | ROC AUC |",
            "|---|---|---|---|---|",
            *[
                f"| {str(r['group']).replace('|', '&#124;')} | {r['size']:,} | {_fmt(r['accuracy'])} "
                f"| {_fmt(r['majority_accuracy'])} | {_fmt(r.get('auc'))} |"
                for r in e["groups"]
            ],
            "",
        ]
        if e["groups_not_reported"]:
            out.append(f"{e['groups_not_reported']} group(s) not reported (below the minimum size).")
        if e["accuracy_gap"] is not None:
            out.append(f"Largest accuracy gap between reported groups: {e['accuracy_gap']:.4g}.")
        out.append("")
    return out


def card_html(card: dict[str, Any]) -> str:
    """The card as an HTML fragment (notebooks): warnings first, privacy, utility, fairness tables."""
    e = html.escape
    p, u = card["privacy"], card["utility"]
    parts = [f"<div class='complai-card'><h3>Model card: {e(str(card['name']))} ({e(str(card['model_id']))})</h3>"]
    for w in card_warnings(card):
        parts.append(f"<p style='color:#b00020'><b>Warning:</b> {e(w)}</p>")
    if "intended_use" in card:
        parts.append(f"<p><b>Intended use:</b> {e(card['intended_use'] or 'not declared')}</p>")
        if card.get("limitations"):
            parts.append("<p><b>Limitations:</b></p><ul>" + "".join(f"<li>{e(x)}</li>" for x in card["limitations"]))
            parts.append("</ul>")
    if p["private"]:
        parts.append(
            f"<p><b>Privacy:</b> (epsilon, delta) = ({p['epsilon']:.4g}, {p['delta']:.3g}) per subject, "
            f"{e(str(p['accountant']))} accountant; noise multiplier {p['noise_multiplier']:.4g}, "
            f"{p['steps']} steps</p>"
        )
    else:
        parts.append("<p><b>Privacy:</b> not differentially private</p>")
    parts.append("<table><tr><th>held-out metric</th><th>value</th></tr>")
    parts += [
        f"<tr><td>{e(k)}</td><td>{e(_fmt(v) if isinstance(v, float) else str(v))}</td></tr>" for k, v in u.items()
    ]
    parts.append("</table>")
    section = card.get("fairness")
    if section is not None:
        parts.append(f"<p><b>Fairness</b> (groups of at least {section['min_group_size']} held-out subjects)</p>")
        for name, a in section["attributes"].items():
            if a["status"] != "computed":
                parts.append(f"<p><code>{e(name)}</code>: not computed ({e(a['reason'])})</p>")
                continue
            parts.append(
                f"<table><caption><code>{e(name)}</code></caption>"
                "<tr><th>group</th><th>subjects</th><th>accuracy</th><th>ROC AUC</th></tr>"
            )
            parts += [
                f"<tr><td>{e(r['group'])}</td><td>{r['size']:,}</td><td>{_fmt(r['accuracy'])}</td>"
                f"<td>{_fmt(r.get('auc'))}</td></tr>"
                for r in a["groups"]
            ]
            parts.append("</table>")
    parts.append("</div>")
    return "".join(parts)


WITHHELD = (
    "withheld: exact figures about the held-out subjects are given only to principals who may read "
    "the dataset for this purpose"
)


def without_evaluation(card: dict[str, Any]) -> dict[str, Any]:
    """A private run's card as a principal who may train on the dataset but not read it receives it:
    the held-out evaluation (utility, fairness, the warnings drawn from them), the final training loss
    and the training manifest digest are exact functions of the data that no DP guarantee covers, so
    they are withheld; everything else (the model, its privacy parameters, all public) is as stored."""
    out: dict[str, Any] = json.loads(json.dumps(card))
    out["utility"] = {"withheld": WITHHELD}
    if "fairness" in out:
        out["fairness"] = None
    if "warnings" in out:
        out["warnings"] = [w for w in out["warnings"] if w == NO_INTENDED_USE]
    out["training"]["final_loss"] = None
    out["data"]["manifest_digest"] = "withheld"
    out["withheld"] = ["utility", "fairness", "warnings about utility", "training.final_loss", "data.manifest_digest"]
    return out


class ModelCard(dict[str, Any]):
    """A model card (the plain JSON mapping) that also renders itself in a notebook."""

    def _repr_html_(self) -> str:
        return card_html(self)

    def markdown(self) -> str:
        return card_markdown(self)

    @property
    def warnings(self) -> list[str]:
        return card_warnings(self)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def new_model_id() -> str:
    return "m-" + secrets.token_hex(6)


def write_model(directory: Path, module: nn.Module, card: dict[str, Any]) -> tuple[str, str]:
    """Weights and both card forms into `directory` (created 0700); (model digest, card digest)."""
    from safetensors.torch import save_file  # heavy: imports torch

    directory.mkdir(parents=True, mode=0o700)
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(directory / MODEL_FILE), metadata={"model_id": card["model_id"]})
    card["model_digest"] = file_digest(directory / MODEL_FILE)
    body = canonical_card(card)
    (directory / CARD_JSON).write_bytes(body)
    (directory / CARD_MD).write_text(card_markdown(card))
    return card["model_digest"], digest(body)


def canonical_card(card: dict[str, Any]) -> bytes:
    """The card as canonical JSON (RFC 8785); undefined metrics (NaN) as null."""
    body: bytes = rfc8785.dumps(finite(card))
    return body


def load_module(directory: Path, card: dict[str, Any]) -> nn.Module:
    """The stored model, rebuilt from its card's architecture and its weights (digest checked)."""
    from safetensors.torch import load_file  # heavy: imports torch

    from complai.dp.nets import build  # heavy: imports torch

    path = directory / MODEL_FILE
    if not path.exists():
        raise NotFound(f"model weights missing: {path}")
    if file_digest(path) != card["model_digest"]:
        raise IntegrityError(f"model weights of {card['model_id']} do not match the digest in its card")
    module = build(card["architecture"], pretrained=False)
    module.load_state_dict(load_file(str(path)))
    module.eval()
    return module
