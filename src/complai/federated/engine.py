"""Federated training, transport-free: the spec, partitions, each organisation's local step (through a
governed session), update clipping and quantisation, DP-FedAvg noise and its accounting.

An organisation's local step reads its own data through an `Organisation` (a session bound to the
organisation's principal and "federated_training": consent enforced, recorded), trains the shared
model for a few local epochs from the global weights (FedAvg, or FedProx with a proximal term), clips
the update to L2 norm `clip_norm`, optionally adds local-DP Gaussian noise, and records in its own
ledger a digest of exactly what left the organisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypedDict

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from complai.dp.features import Labels, TabularFeatures
from complai.dp.training import default_features, majority_warning
from complai.errors import InvalidInput
from complai.events import FederatedRound
from complai.vault.schema import DatasetSchema

if TYPE_CHECKING:
    import torch

PURPOSE = "federated_training"


class FederatedSpec(BaseModel):
    """A federated run, checked whole before anything starts: finite numbers, bounded sizes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: str = "adult"
    label: str = "income"
    features: list[str] | None = None
    purpose: str = Field(PURPOSE, min_length=1, max_length=200)
    model: Literal["logreg", "mlp"] = "logreg"
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field([32], min_length=1, max_length=8)
    organisations: int = Field(3, ge=2, le=1000)
    partition: Literal["iid", "dirichlet"] = "iid"
    alpha: float = Field(0.5, gt=0, le=1e6)
    rows: int | None = Field(None, ge=10, le=10**9)
    rounds: int = Field(5, ge=1, le=10_000)
    fraction: float = Field(1.0, gt=0, le=1)
    local_epochs: int = Field(1, ge=1, le=100)
    batch_size: int = Field(64, ge=1, le=1_000_000)
    learning_rate: float = Field(0.05, gt=0, le=10)
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    mu: float = Field(0.01, ge=0, le=1e4)
    secure_aggregation: bool = True
    neighbours: int | None = Field(None, ge=1, le=1000)
    max_dropout: float | None = Field(None, ge=0, lt=0.5)  # None: the most tolerant threshold, k//2 + 1
    clip_norm: float = Field(5.0, gt=0, le=1e4)
    dp: Literal["none", "central", "local"] = "none"
    noise_multiplier: float = Field(1.0, ge=0, le=1e4)
    delta: float = Field(1e-5, gt=0, lt=1)
    accountant: Literal["rdp", "prv"] = "rdp"
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(0, ge=0, lt=2**32)
    timeout_s: float = Field(600, gt=0, le=7 * 86400)

    @model_validator(mode="after")
    def _dp(self) -> FederatedSpec:
        if self.dp != "none" and self.noise_multiplier <= 0:
            raise ValueError("DP needs a positive noise_multiplier")
        return self

    @classmethod
    def parse(cls, data: dict[str, Any]) -> FederatedSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "spec"
            raise InvalidInput(f"federated spec: {where}: {err['msg']}".replace("\n", " ")) from None


# --- the dataset a run trains on ------------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """What a run reads of its dataset and how it encodes it: the feature fields (the spec's, or every
    field a tabular model can take), their encoding and the label's classes, all from the schema."""

    features: list[str]
    encoding: TabularFeatures
    labels: Labels


def columns(schema: DatasetSchema, spec: FederatedSpec) -> Columns:
    """Check the spec against the dataset's schema before anything is read or created: the label a
    category with declared values (or a boolean), every feature a field a tabular model can take, encoded
    as central DP training encodes it (dp/features.py). A mismatch is one line (InvalidInput)."""
    try:
        labels = Labels(schema, spec.label)
        names = list(spec.features) if spec.features else default_features(schema, spec.label)
        if spec.label in names:
            raise InvalidInput(f"the label {spec.label!r} cannot also be a feature")
        direct = [n for n in names if n == schema.subject_column or schema.field(n).identifier == "direct"]
        if direct:
            raise InvalidInput(f"direct identifier(s) {direct} cannot be features")
        encoding = TabularFeatures(schema, names)
    except InvalidInput as exc:
        raise InvalidInput(f"federated spec: {exc.message}") from None
    return Columns(names, encoding, labels)


@dataclass(frozen=True)
class Partition:
    """A dataset's governed rows split among a simulated federation's organisations: the schema each
    organisation declares for its share (organisation_schema), the shares (subject pseudonym, features,
    label) and the ledger entry of the read they came from."""

    schema: DatasetSchema
    shares: list[pd.DataFrame]
    ledger_seq: int


def organisation_schema(schema: DatasetSchema, spec: FederatedSpec, cols: Columns) -> DatasetSchema:
    """The schema an organisation's workspace declares for its partition: the source's declarations for
    the subject column, the features and the label only (nothing else is copied to it); subjects are
    named by their pseudonym in the source workspace, so the subject column becomes a plain string."""
    keep = {schema.subject_column, *cols.features, spec.label}
    fields = []
    for f in schema.fields:
        if f.name == schema.subject_column:
            fields.append(
                f.model_copy(update={"type": "string", "min": None, "max": None, "values": None, "nullable": False})
            )
        elif f.name in keep:
            fields.append(f)
    deidentify = {
        purpose: {**d.model_dump(), "pseudonymize": [c for c in d.pseudonymize if c in keep], "text": {}}
        for purpose, d in schema.deidentify.items()
    }
    return DatasetSchema.model_validate(
        {**schema.model_dump(), "fields": [f.model_dump() for f in fields], "deidentify": deidentify}
    )


def majority_accuracy(label_counts: np.ndarray | list[int]) -> float | None:
    """The accuracy of always predicting the most frequent label: its share of the counts."""
    counts = np.asarray(label_counts, dtype=np.int64)
    total = int(counts.sum())
    return float(counts.max() / total) if total else None


def below_majority(accuracy: float | None, label_counts: np.ndarray | list[int]) -> str | None:
    """The model cards' warning (dp/training.py) when `accuracy` is below the majority-class baseline of
    held-out rows counted per class in `label_counts`; None otherwise or when nothing was evaluated."""
    counts = np.asarray(label_counts, dtype=np.int64)
    if accuracy is None or int(counts.sum()) == 0:
        return None
    return majority_warning(accuracy, np.repeat(np.arange(len(counts)), counts))


# --- partitions ------------------------------------------------------------------------------------


def partition(labels: np.ndarray, parts: int, kind: str, alpha: float, seed: int) -> list[np.ndarray]:
    """Row indices per organisation: IID (a shuffled even split) or non-IID with, for each class, the
    shares drawn from Dirichlet(alpha) (smaller alpha: more skewed)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    if parts > n:
        raise InvalidInput(f"{parts} organisations need at least as many rows (have {n})")
    if kind == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(n), parts)]
    out: list[list[int]] = [[] for _ in range(parts)]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        shares = rng.dirichlet(np.full(parts, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for i, chunk in enumerate(np.split(idx, cuts)):
            out[i].extend(chunk.tolist())
    # nobody may be left empty: give an empty organisation one row from the largest
    for i in range(parts):
        if not out[i]:
            j = max(range(parts), key=lambda k: len(out[k]))
            out[i].append(out[j].pop())
    return [np.sort(np.array(p, dtype=np.int64)) for p in out]


# --- model vectors ---------------------------------------------------------------------------------


def architecture(spec: FederatedSpec, inputs: int, classes: int) -> dict[str, Any]:
    arch: dict[str, Any] = {"architecture": spec.model, "inputs": inputs, "classes": classes}
    if spec.model == "mlp":
        arch["hidden"] = list(spec.hidden)
    return arch


def initial_vector(arch: dict[str, Any], seed: int) -> np.ndarray:
    import torch  # heavy: torch

    from complai.dp.nets import build  # heavy: imports torch

    torch.manual_seed(seed)
    return to_vector(build(arch))


def to_vector(module: torch.nn.Module) -> np.ndarray:
    import torch  # heavy: torch

    vec: np.ndarray = torch.nn.utils.parameters_to_vector(module.parameters()).detach().double().numpy().copy()
    return vec


def load_vector(module: torch.nn.Module, vec: np.ndarray) -> None:
    import torch  # heavy: torch

    torch.nn.utils.vector_to_parameters(torch.from_numpy(np.asarray(vec, dtype=np.float32)), module.parameters())


def clip(update: np.ndarray, norm: float) -> tuple[np.ndarray, bool]:
    size = float(np.linalg.norm(update))
    if size <= norm:
        return update, False
    return update * (norm / size), True


# --- one organisation --------------------------------------------------------------------------------


class Organisation(Protocol):
    """What one organisation's side of a run needs from its workspace: a session bound to the
    organisation's principal and PURPOSE satisfies it, so every read and record is authorised and
    recorded there."""

    def training_schema(self, dataset: str) -> DatasetSchema:
        """The declared schema of a dataset the session may read."""
        ...

    def read(self, dataset: str, columns: list[str] | None = None) -> pd.DataFrame:
        """The dataset's governed rows for the purpose (consent enforced, the read recorded)."""
        ...

    def record_federated_update(
        self,
        *,
        run_id: str,
        round: int,
        dataset: str,
        examples: int,
        secure_aggregation: bool,
        local_dp: bool,
        update_digest: str,
    ) -> int:
        """Record what left the organisation in one round (a digest); returns the ledger sequence."""
        ...


class Coordinator(Protocol):
    """What the coordinating server records: a session of the server's workspace bound to PURPOSE
    satisfies it."""

    def record_federated_round(
        self,
        *,
        run_id: str,
        round: int,
        sampled: int,
        survivors: int,
        dropped: int,
        secure_aggregation: bool,
        dp: str,
        noise_multiplier: float | None,
        clip_norm: float | None,
        sample_rate: float,
        epsilon: float | None,
        delta: float | None,
        aggregate_digest: str,
    ) -> int:
        """Record one aggregation round as the server saw it; returns the ledger sequence."""
        ...


@dataclass
class LocalData:
    x: torch.Tensor
    y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    arch: dict[str, Any]


def local_data(org: Organisation, spec: FederatedSpec) -> LocalData:
    """The organisation's rows for federated training (governed, recorded), as tensors; features and
    classes from the shared schema, a held-out share for federated evaluation."""
    import torch  # heavy: torch

    schema = org.training_schema(spec.dataset)
    cols = columns(schema, spec)
    labels, names, feats = cols.labels, cols.features, cols.encoding
    frame = org.read(spec.dataset, columns=[*names, spec.label])
    frame = frame[labels.known(frame)].reset_index(drop=True)
    if len(frame) < 2:
        raise InvalidInput("this organisation has fewer than two usable records")
    x = torch.from_numpy(feats.transform(frame))
    y = torch.from_numpy(labels.transform(frame))
    rng = np.random.default_rng(spec.seed)
    test = rng.random(len(frame)) < spec.test_fraction
    tr, te = torch.from_numpy(np.flatnonzero(~test)), torch.from_numpy(np.flatnonzero(test))
    return LocalData(x[tr], y[tr], x[te], y[te], architecture(spec, feats.dim, len(labels.classes)))


def local_train(data: LocalData, spec: FederatedSpec, global_vec: np.ndarray, round_: int) -> tuple[np.ndarray, int]:
    """(update = local weights - global, examples used) after spec.local_epochs of local SGD."""
    import torch  # heavy: torch
    from torch import nn  # heavy: torch
    from torch.utils.data import DataLoader, TensorDataset  # heavy: torch

    from complai.dp.nets import build  # heavy: imports torch

    torch.manual_seed(spec.seed * 100_003 + round_)
    model = build(data.arch)
    load_vector(model, global_vec)
    anchor = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=spec.learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(spec.seed + round_)
    loader = DataLoader(TensorDataset(data.x, data.y), batch_size=spec.batch_size, shuffle=True, generator=gen)
    model.train()
    for _ in range(spec.local_epochs):
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            if spec.strategy == "fedprox" and spec.mu > 0:
                loss = loss + spec.mu / 2 * sum(
                    ((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
                )
            loss.backward()
            opt.step()
    return to_vector(model) - global_vec, len(data.y)


def local_evaluate(data: LocalData, vec: np.ndarray) -> tuple[int, int]:
    """(correct, total) on the organisation's held-out rows."""
    import torch  # heavy: torch

    from complai.dp.nets import build  # heavy: imports torch

    model = build(data.arch)
    load_vector(model, vec)
    model.eval()
    with torch.no_grad():
        pred = model(data.test_x).argmax(1)
    return int((pred == data.test_y).sum()), len(data.test_y)


def label_counts(data: LocalData) -> list[int]:
    """How many of the organisation's held-out rows carry each class: what the majority-class baseline
    of a federated evaluation is computed from (an aggregate the organisation sends with its accuracy)."""
    classes = int(data.arch["classes"])
    return [int(c) for c in np.bincount(data.test_y.numpy(), minlength=classes)]


def privatise_local(update: np.ndarray, spec: FederatedSpec, rng: np.random.Generator) -> np.ndarray:
    """Local DP: Gaussian noise N(0, (noise_multiplier * clip_norm)^2) on the clipped update, added by the
    organisation before anything leaves it."""
    return update + rng.normal(0.0, spec.noise_multiplier * spec.clip_norm, update.shape)


# --- DP-FedAvg accounting ------------------------------------------------------------------------------


def dp_epsilon(spec: FederatedSpec, rounds: int, sample_rate: float) -> float | None:
    """Epsilon at spec.delta after `rounds` rounds, with the Opacus accountant DP training uses.

    Central DP (McMahan et al. 2018): per round the server adds N(0, (z C)^2) to the sum of updates each
    clipped to C, with organisations sampled at rate q: a subsampled Gaussian with noise multiplier z,
    user (organisation) level. Local DP: each organisation's update is a Gaussian mechanism with the
    same z on its own, no amplification by sampling (q = 1) from its own point of view."""
    if spec.dp == "none" or rounds == 0:
        return None
    from opacus.accountants import create_accountant  # heavy: opacus imports torch

    acc = create_accountant(spec.accountant)
    q = sample_rate if spec.dp == "central" else 1.0
    acc.history = [(spec.noise_multiplier, q, rounds)]
    return float(acc.get_epsilon(delta=spec.delta))


def recompute_epsilon(event: FederatedRound, spec_accountant: str = "rdp") -> float:
    """A federated.round event's epsilon from its recorded parameters."""
    from opacus.accountants import create_accountant  # heavy: opacus imports torch

    acc = create_accountant(spec_accountant)
    q = event.sample_rate if event.dp == "central" else 1.0
    acc.history = [(event.noise_multiplier, q, event.round)]
    return float(acc.get_epsilon(delta=event.delta))


def prepare_update(update: np.ndarray, spec: FederatedSpec) -> np.ndarray:
    """What an organisation sends: its update clipped to `clip_norm`, with local-DP noise when asked."""
    update, _ = clip(update, spec.clip_norm)
    if spec.dp == "local":
        update = privatise_local(update, spec, np.random.default_rng())
    return update


def central_noise(total: np.ndarray, spec: FederatedSpec, rng: np.random.Generator) -> np.ndarray:
    return total + rng.normal(0.0, spec.noise_multiplier * spec.clip_norm, total.shape)


def expected_clients(spec: FederatedSpec, available: int) -> int:
    return max(2, math.ceil(spec.fraction * available))


class Layout(TypedDict):
    """Where a federation's workspaces are, and each organisation's share of the rows."""

    server: str
    organisations: list[str]
    rows: list[int]


class RoundSummary(TypedDict):
    """One round as a run's history reports it."""

    round: int
    seconds: float
    survivors: int
    dropped: int
    accuracy: float | None
    majority: float | None  # the majority-class accuracy on the same held-out rows
    epsilon: float | None


RoundProgress = Callable[[RoundSummary, int], None]
"""Called after each round with its summary and the run's total number of rounds."""


def workspace_paths(root: Path, spec: FederatedSpec) -> tuple[Path, list[Path]]:
    return root / "server", [root / f"org-{i}" for i in range(spec.organisations)]
