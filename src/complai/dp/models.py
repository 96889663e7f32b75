"""The model registry: training runs as recorded operations, stored models, their cards and flags.

Files live under `<workspace>/models/<model id>/` (weights, card.json, card.md); the store keeps the
canonical card, its digest, the weights' digest, the training subjects (for erasure flagging) and the
flag an erasure or retention sweep sets (through the vault's notices, handled here in the vault's
transaction); the ledger's model.trained entry binds the digests.
"""

from __future__ import annotations

import builtins
import json
import shutil
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Row, delete, insert, select, update

from complai.clock import Clock, utc_iso
from complai.crypto.digest import digest
from complai.dp.budget import Budgets
from complai.dp.features import Labels, TabularFeatures
from complai.dp.training import (
    CARD_JSON,
    CARD_MD,
    MODEL_FILE,
    NO_INTENDED_USE,
    SUBJECT,
    FitResult,
    Prepared,
    PrivatePlan,
    TrainingSpec,
    canonical_card,
    card_markdown,
    check_size,
    default_features,
    fairness,
    file_digest,
    fit,
    labels_of,
    load_module,
    majority_warning,
    new_model_id,
    one_per_subject,
    predict,
    prepare,
    private_plan,
    size_bound,
    utility_of,
    write_model,
)
from complai.errors import IntegrityError, InvalidInput, NotFound
from complai.events import BudgetSpent, ModelAudited, ModelTrained
from complai.ledger.log import Ledger
from complai.store import Store
from complai.store.tables import model_subjects, models, subjects
from complai.vault.notices import RecordsExpired, SubjectsErased
from complai.vault.schema import DatasetSchema
from complai.vault.subjects import chunks


def manifest_digest(schema_digest: str, pseudonyms: list[str]) -> str:
    """Digest of exactly which subjects trained a model, under which schema."""
    return digest(schema_digest.encode() + b"\n" + b"".join(p.encode() + b"\n" for p in sorted(set(pseudonyms))))


class Models:
    def __init__(self, store: Store, ledger: Ledger, budgets: Budgets, clock: Clock, root: Path) -> None:
        self.store, self.ledger, self.budgets, self.clock = store, ledger, budgets, clock
        self.root = root

    # --- training --------------------------------------------------------------------------------

    def preflight(self, spec: TrainingSpec, schema: DatasetSchema, actor: str, delta_floor: float = 1e-9) -> None:
        """Everything that can be refused without reading data: spec against schema, budget for the target.
        `delta_floor`: the least delta the run can use when the spec leaves it to the data (see train)."""
        labels = Labels(schema, spec.label)
        if spec.text:
            if schema.field(spec.text).type not in ("text", "string"):
                raise InvalidInput(f"field {spec.text} is not text")
        else:
            names = spec.features or default_features(schema, spec.label)
            if spec.label in names:
                raise InvalidInput(f"the label {spec.label} cannot also be a feature")
            check_size(spec, TabularFeatures(schema, names, spec.reference_date).dim, len(labels.classes))
        if spec.private:
            assert spec.target_epsilon is not None
            delta = spec.delta if spec.delta is not None else delta_floor
            self.budgets.check(spec.dataset, actor, (spec.target_epsilon, delta))

    def train(
        self,
        spec: TrainingSpec,
        schema: DatasetSchema,
        frame: pd.DataFrame,
        *,
        actor: str,
        purpose: str,
        lawful_basis: str,
        deidentification: dict[str, Any] | None,
        progress: Callable[[int, int], None] | None = None,
        fairness_excluded: dict[str, str] | None = None,
        population: int | None = None,
    ) -> tuple[dict[str, Any], int]:
        """Train on a governed frame (with the SUBJECT column), store the model; (card, ledger seq).
        `fairness_excluded`: sensitive attributes the purpose's de-identification removed or rewrote
        (attribute -> why), which the card's fairness section names instead of measuring.
        `population`: for a private run, the public bound on the number of subjects (size_bound of the
        dataset's subjects) its delta, sampling rate and steps come from; without it, the bound of the
        frame's own subjects (a caller who may read the data).

        A private run reserves its budget before anything is computed from the data, so a run that
        then fails (a split with nothing held out, say) keeps it spent, and its card, its ledger entry
        and its progress carry no count of subjects: only the bound and parameters derived from it."""
        from complai.dp.nets import build, count  # heavy: imports torch

        frame = one_per_subject(frame, spec.seed)
        model_id = new_model_id()
        plan = None
        if spec.private:
            bound = population if population is not None else size_bound(len(frame))
            if bound <= 0:
                raise InvalidInput(f"dataset {spec.dataset} has no subjects to train on")
            delta = spec.delta if spec.delta is not None else min(1e-5, 0.1 / bound)
            if delta >= 1 / bound:
                raise InvalidInput(
                    f"delta {delta:g} must be below 1/N, N the number of training subjects: below 1/{bound} "
                    "(the dataset's size rounded up to a power of two)"
                )
            spec = spec.model_copy(update={"delta": delta})
            plan = private_plan(spec, bound)
            self._reserve(spec, plan, model_id, actor, purpose)
        prepared = prepare(schema, frame, spec)
        module = build(prepared.arch)
        result = fit(module, prepared.train, spec, progress=progress, plan=plan)
        total, trainable = count(result.module)
        card = self._card(
            spec, schema, prepared, result, model_id, actor, purpose, lawful_basis, deidentification, total, trainable
        )
        if plan is not None:
            # the expected batch the gradients are scaled by: bound * q = bound / ceil(bound / batch_size)
            card["privacy"].update(size_bound=plan.population, expected_batch_size=plan.expected_batch_size)
        card.update(_evaluation(spec, schema, prepared, predict(result.module, prepared.test), fairness_excluded or {}))
        seq = self._store(model_id, spec, card, result.module, prepared, actor, purpose)
        return card, seq

    def _reserve(self, spec: TrainingSpec, plan: PrivatePlan, model_id: str, actor: str, purpose: str) -> None:
        """Reserve a private run's planned (epsilon, delta) with its dp.spent event (atomic; refuses overspend)."""
        assert spec.delta is not None
        with self.store.write() as conn:
            self.budgets.reserve(
                conn, spec.dataset, actor, f"train {model_id}", "dp-sgd", approx=(plan.epsilon, spec.delta)
            )
            self.ledger.emit(
                conn,
                BudgetSpent,
                actor=actor,
                purpose=purpose,
                dataset=spec.dataset,
                rho=0.0,
                epsilon=plan.epsilon,
                delta=spec.delta,
                mechanism="dp-sgd",
                epsilon_remaining=self.budgets.remaining(conn, spec.dataset),
            )

    def _card(
        self,
        spec: TrainingSpec,
        schema: DatasetSchema,
        prepared: Prepared,
        result: FitResult,
        model_id: str,
        actor: str,
        purpose: str,
        lawful_basis: str,
        deidentification: dict[str, Any] | None,
        total: int,
        trainable: int,
    ) -> dict[str, Any]:
        import opacus  # heavy: imports torch
        import torch  # heavy:

        privacy: dict[str, Any] = {"private": spec.private}
        if spec.private:
            privacy.update(
                epsilon=result.epsilon,
                delta=spec.delta,
                target_epsilon=spec.target_epsilon,
                accountant=spec.accountant,
                noise_multiplier=result.noise_multiplier,
                sample_rate=result.sample_rate,
                steps=result.steps,
                epochs=spec.epochs,
                expected_batch_size=spec.batch_size,
                max_grad_norm=spec.max_grad_norm,
                clipping=spec.clipping,
                sampling="poisson",
                unit="subject (one record per subject)",
            )
        else:
            privacy.update(sample_rate=result.sample_rate, steps=result.steps, epochs=spec.epochs)
        return {
            "card_format": 2,
            "model_id": model_id,
            "name": spec.name or f"{spec.dataset}-{spec.model}",
            "created_at": utc_iso(self.clock.now()),
            "created_by": actor,
            "task": {"type": "classification", "label": spec.label, "classes": prepared.classes},
            "architecture": prepared.arch,
            "parameters": {"total": total, "trainable": trainable},
            "data": {
                "dataset": spec.dataset,
                "schema_digest": schema.digest(),
                "purpose": purpose,
                "lawful_basis": lawful_basis,
                # a private run's card states no count of subjects (privacy.size_bound is the public bound)
                **(
                    {}
                    if spec.private
                    else {
                        "training_subjects": len(prepared.train_subjects),
                        "test_subjects": len(prepared.test_subjects),
                    }
                ),
                "manifest_digest": manifest_digest(schema.digest(), prepared.train_subjects),
                "split": {"test_fraction": spec.test_fraction, "seed": spec.seed, "rule": "keyed BLAKE2b of pseudonym"},
                "deidentification": deidentification or {},
                "preprocessing": prepared.preprocessing,
            },
            "privacy": privacy,
            "training": {
                "optimizer": spec.optimizer,
                "learning_rate": spec.learning_rate,
                "seed": spec.seed,
                "seconds": round(result.seconds, 3),
                "final_loss": result.history[-1] if result.history else None,
                "libraries": {"torch": torch.__version__, "opacus": opacus.__version__},
            },
            "spec": spec.model_dump(mode="json"),
        }

    def _store(
        self,
        model_id: str,
        spec: TrainingSpec,
        card: dict[str, Any],
        module: Any,
        prepared: Prepared,
        actor: str,
        purpose: str,
    ) -> int:
        directory = self.root / model_id
        model_digest, card_digest = write_model(directory, module, card)
        p = card["privacy"]
        try:
            with self.store.write() as conn:
                ids = _subject_ids(conn, prepared.train_subjects)
                # the registry row and the model.trained entry of a private run give its public size bound,
                # not the number of subjects that trained it (an exact count no DP guarantee covers)
                subjects_recorded = int(p["size_bound"]) if spec.private else len(ids)
                now = self.clock.now()
                conn.execute(
                    insert(models).values(
                        id=model_id,
                        dataset=spec.dataset,
                        task=card["task"]["type"],
                        architecture=card["architecture"]["architecture"],
                        purpose=purpose,
                        created_by=actor,
                        created_at=now,
                        private=spec.private,
                        epsilon=p.get("epsilon"),
                        delta=p.get("delta"),
                        subjects=subjects_recorded,
                        model_digest=model_digest,
                        card_digest=card_digest,
                        card=canonical_card(card).decode(),
                    )
                )
                if ids:
                    conn.execute(insert(model_subjects), [{"model_id": model_id, "subject_id": i} for i in ids])
                return self.ledger.emit(
                    conn,
                    ModelTrained,
                    time=now,
                    actor=actor,
                    purpose=purpose,
                    model_id=model_id,
                    dataset=spec.dataset,
                    architecture=card["architecture"]["architecture"],
                    private=spec.private,
                    epsilon=p.get("epsilon"),
                    delta=p.get("delta"),
                    accountant=p.get("accountant"),
                    noise_multiplier=p.get("noise_multiplier"),
                    sample_rate=p["sample_rate"],
                    steps=p["steps"],
                    max_grad_norm=p.get("max_grad_norm"),
                    subjects=subjects_recorded,
                    manifest_digest=card["data"]["manifest_digest"],
                    model_digest=model_digest,
                    card_digest=card_digest,
                )
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def record_audit(self, model_id: str, report: dict[str, Any], actor: str, purpose: str) -> int:
        """Keep an audit report next to the model (audit-<seq>.json) and record it in the ledger."""
        body = canonical_card(report)
        with self.store.write() as conn:
            seq = self.ledger.emit(
                conn,
                ModelAudited,
                actor=actor,
                purpose=purpose,
                model_id=model_id,
                claimed_epsilon=report["claimed_epsilon"],
                members=report["members"],
                non_members=report["non_members"],
                shadow_models=report["shadow_models"],
                results={k: {m: float(v) for m, v in r.items()} for k, r in report["attacks"].items()},
                empirical_epsilon=report["empirical_epsilon"],
                report_digest=digest(body),
            )
            path = self.directory(model_id) / f"audit-{seq}.json"
            path.write_bytes(body)
        report["ledger_seq"] = seq
        report["report_path"] = str(path)
        return seq

    # --- flags (handlers of the vault's notices, run in the vault's transaction) -------------------

    def flag_erased(self, notice: SubjectsErased) -> None:
        """Subjects were erased: flag the models their records trained."""
        reason = f"a training subject was erased (ledger entry {notice.seq})"
        _flag(notice.conn, notice.subject_ids, reason, notice.at)

    def flag_expired(self, notice: RecordsExpired) -> None:
        """Records of a dataset passed their retention: flag the models of that dataset they trained."""
        _flag(notice.conn, notice.subject_ids, f"a training record {notice.why}", notice.at, notice.dataset)

    # --- registry --------------------------------------------------------------------------------

    def list(self) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            rows = conn.execute(select(models).order_by(models.c.created_at, models.c.id)).all()
        return [self._summary(r) for r in rows]

    def get(self, model_id: str) -> dict[str, Any]:
        """The model's summary with its card (as stored in the database), once its integrity is checked:
        IntegrityError if the registry row, card.json, card.md or the weights differ from what the
        ledger's model.trained entry bound."""
        with self.store.read() as conn:
            row = conn.execute(select(models).where(models.c.id == model_id)).first()
        if row is None:
            raise NotFound(f"no model {model_id!r}")
        problems = self.check([row]).get(model_id)
        if problems:
            raise IntegrityError(f"model {model_id}: {problems[0]}; the model was altered outside complai")
        out = self._summary(row)
        out["card"] = json.loads(row.card)
        return out

    def check(self, rows: Sequence[Row[*tuple[Any, ...]]] | None = None) -> dict[str, builtins.list[str]]:
        """Integrity of stored models (all, or these registry rows): model id -> problems (empty when
        intact). Each model's registry row, canonical card, card.json, card.md and weights must have the
        digests and privacy parameters its model.trained ledger entry recorded; every entry has its row."""
        with self.store.read() as conn:
            if rows is None:
                rows = list(conn.execute(select(models).order_by(models.c.id)).all())
                wanted = None
            else:
                wanted = {r.id for r in rows}
            trained: dict[str, dict[str, Any]] = {}
            for seq, _, data in self.ledger.scan(conn, [ModelTrained.kind]):
                ev = json.loads(data)
                if wanted is None or ev.get("model_id") in wanted:
                    trained[str(ev.get("model_id"))] = {**ev, "_seq": seq}
        out: dict[str, list[str]] = {}
        for r in rows:
            problems = out.setdefault(r.id, [])
            ev = trained.get(r.id)
            if ev is None:
                problems.append("the ledger has no model.trained entry for it")
                continue
            at = f"ledger entry {ev['_seq']}"
            if r.model_digest != ev.get("model_digest") or r.card_digest != ev.get("card_digest"):
                problems.append(f"its registry digests are not the ones {at} recorded")
            stored = {
                "dataset": r.dataset,
                "private": bool(r.private),
                "epsilon": r.epsilon,
                "delta": r.delta,
                "subjects": r.subjects,
            }
            for name, value in stored.items():
                if value != ev.get(name):
                    problems.append(f"its registry {name} {value!r} is not the {ev.get(name)!r} {at} recorded")
            card_bytes = str(r.card).encode()
            if digest(card_bytes) != ev.get("card_digest"):
                problems.append(f"its stored card is not the one {at} recorded")
            directory = self.directory(r.id)
            for name, want in ((CARD_JSON, ev.get("card_digest")), (MODEL_FILE, ev.get("model_digest"))):
                path = directory / name
                if not path.is_file():
                    problems.append(f"{name} is missing")
                elif file_digest(path) != want:
                    problems.append(f"{name}: its contents do not match the digest {at} recorded")
            # card.md is a rendering for readers: its privacy claims and weights digest must be the card's
            try:
                text = (directory / CARD_MD).read_text()
                claims = [
                    line
                    for line in card_markdown(json.loads(card_bytes)).split("\n")
                    if line.startswith(
                        ("- (epsilon, delta)", "- noise multiplier", "- **not differentially", "Weights:")
                    )
                ]
                if not all(line in text.split("\n") for line in claims):
                    problems.append(f"{CARD_MD} does not state the card's privacy parameters and weights digest")
            except (OSError, ValueError, KeyError, TypeError):
                problems.append(f"{CARD_MD} is missing or unreadable")
        if wanted is None:
            for model_id, ev in sorted(trained.items()):
                if model_id not in out:
                    out[model_id] = [f"trained at ledger entry {ev['_seq']} but missing from the registry"]
        return out

    def directory(self, model_id: str) -> Path:
        return self.root / model_id

    def load(self, model_id: str) -> tuple[Any, dict[str, Any]]:
        info = self.get(model_id)
        return load_module(self.directory(model_id), info["card"]), info["card"]

    def training_subjects(self, model_id: str) -> set[str]:
        """Pseudonyms of the (not erased) subjects that trained the model."""
        ms, s = model_subjects.c, subjects.c
        with self.store.read() as conn:
            return {
                str(p)
                for p in conn.execute(
                    select(s.pseudonym)
                    .select_from(model_subjects.join(subjects, s.id == ms.subject_id))
                    .where(ms.model_id == model_id)
                ).scalars()
            }

    @staticmethod
    def _summary(r: Row[*tuple[Any, ...]]) -> dict[str, Any]:
        return {
            "model_id": r.id,
            "dataset": r.dataset,
            "architecture": r.architecture,
            "purpose": r.purpose,
            "created_by": r.created_by,
            "created_at": utc_iso(r.created_at),
            "private": bool(r.private),
            "epsilon": r.epsilon,
            "delta": r.delta,
            "subjects": r.subjects,
            "model_digest": r.model_digest,
            "card_digest": r.card_digest,
            "flagged": r.flagged_at is not None,
            "flag_reason": r.flag_reason,
        }


def _evaluation(
    spec: TrainingSpec, schema: DatasetSchema, prepared: Prepared, logits: Any, excluded: dict[str, str]
) -> dict[str, Any]:
    """The card's held-out evaluation: utility, fairness per sensitive attribute, intended use and
    limitations as declared, and the warnings a reader must see first."""
    y = labels_of(prepared.test)
    u: dict[str, Any] = utility_of(logits, y)
    if spec.private:
        u.pop("test_records")  # a count; the card of a private run states none
    warnings = [w for w in (majority_warning(u["accuracy"], y),) if w]
    if spec.intended_use is None:
        warnings.append(NO_INTENDED_USE)
    inputs = list(prepared.arch.get("features", []))
    return {
        "utility": u,
        "fairness": fairness(schema, spec, logits, y, prepared.test_attributes, excluded, inputs),
        "intended_use": spec.intended_use,
        "limitations": list(spec.limitations),
        "warnings": warnings,
    }


def _flag(conn: Connection, subject_ids: Sequence[int], reason: str, now: datetime, dataset: str | None = None) -> None:
    """Flag the models these subjects' records trained (of `dataset`, or any), so that the next audit
    asks for retraining or a justification; then forget the link."""
    ms = model_subjects.c
    for part in chunks(subject_ids):
        q = select(ms.model_id).where(ms.subject_id.in_(part))
        if dataset is not None:
            q = q.join(models, models.c.id == ms.model_id).where(models.c.dataset == dataset)
        ids = [str(x) for x in conn.execute(q.distinct()).scalars()]
        if not ids:
            continue
        conn.execute(
            update(models)
            .where(models.c.id.in_(ids), models.c.flagged_at.is_(None))
            .values(flagged_at=now, flag_reason=reason[:200])
        )
        conn.execute(delete(model_subjects).where(ms.subject_id.in_(part), ms.model_id.in_(ids)))


def _subject_ids(conn: Connection, pseudonyms: list[str]) -> list[int]:
    out: list[int] = []
    uniq = sorted(set(pseudonyms))
    for i in range(0, len(uniq), 500):
        part = uniq[i : i + 500]
        out += [int(x) for x in conn.execute(select(subjects.c.id).where(subjects.c.pseudonym.in_(part))).scalars()]
    return out


__all__ = ["SUBJECT", "Models", "manifest_digest"]
