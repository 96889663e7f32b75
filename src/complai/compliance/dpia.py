"""Data protection impact assessments (GDPR Art. 35, PIPL Art. 55-56), generated where a trigger applies:
special categories, profiling, or training AI systems on the data. The document describes the
processing (the records of processing), its necessity and proportionality (bases, de-identification,
retention), the risks the compliance engine finds, and the measures in place; a named person signs it
off. A DPIA is current while the dataset's schema is unchanged and it is less than a year old."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

import rfc8785
from sqlalchemy import func, select

from complai.clock import as_utc, utc_iso
from complai.compliance.context import ComplianceServices
from complai.compliance.recorded import Recorded
from complai.compliance.ropa import MEASURES, records_of_processing, special
from complai.crypto.digest import digest as sha256_digest
from complai.errors import InvalidInput, NotFound
from complai.events import DpiaRecorded
from complai.store.tables import datasets, dp_budgets, dpias, models

PROFILING = {"credit_scoring", "fraud_detection"}
AI_TRAINING = {"train_ai_system", "federated_training"}
VALID_FOR = timedelta(days=365)
RISK_CONTROLS = ("DATA-1", "BASIS-1", "RET-1", "ENC-1", "CONSENT-1", "DP-1", "DEID-1", "ERASE-1")

# the compliance engine's results for the named controls at a time (engine.assess): given, not imported,
# since the engine's DPIA control reads this module
Assess = Callable[[ComplianceServices, datetime, Collection[str]], list[dict[str, Any]]]


def registered_digest(svc: ComplianceServices, dataset: str) -> str:
    """The schema digest recorded when the dataset was registered."""
    with svc.store.read() as conn:
        d = conn.execute(select(datasets.c.schema_digest).where(datasets.c.name == dataset)).scalar_one_or_none()
    if d is None:
        raise NotFound(f"no dataset {dataset!r}")
    return str(d)


def triggers(svc: ComplianceServices, dataset: str) -> list[str]:
    """Why the dataset's processing needs a DPIA (empty: it does not)."""
    schema = svc.catalog.get(dataset).schema
    out = []
    special_fields = [f.name for f in schema.fields if special(svc.taxonomy, f.category)]
    if special_fields:
        out.append(f"special categories ({', '.join(special_fields)})")
    if PROFILING & set(schema.purposes):
        out.append(f"profiling ({', '.join(sorted(PROFILING & set(schema.purposes)))})")
    with svc.store.read() as conn:
        trained = conn.execute(select(func.count()).select_from(models).where(models.c.dataset == dataset)).scalar_one()
    if AI_TRAINING & set(schema.purposes) or trained:
        out.append("AI training" + (f" ({trained} models)" if trained else ""))
    return out


def generate(svc: ComplianceServices, dataset: str, actor: str, assess: Assess) -> Recorded[dict[str, Any]]:
    """Write the dataset's next DPIA version (risks: the RISK_CONTROLS as `assess` finds them now) and
    record its digest."""
    found = triggers(svc, dataset)
    if not found:
        raise InvalidInput(f"no DPIA trigger applies to {dataset} (no special categories, profiling or AI training)")
    schema = svc.catalog.get(dataset).schema
    now = svc.clock.now()
    risks = [
        {
            "control": c["id"],
            "title": c["title"],
            "status": c["status"],
            "finding": c["summary"],
            "items": c["items"][:20],
        }
        for c in assess(svc, now, RISK_CONTROLS)
    ]
    with svc.store.read() as conn:
        budgets = [dict(r._mapping) for r in conn.execute(select(dp_budgets).where(dp_budgets.c.dataset == dataset))]
        trained = [
            {"model": m.id, "private": bool(m.private), "epsilon": m.epsilon, "delta": m.delta}
            for m in conn.execute(select(models).where(models.c.dataset == dataset))
        ]
        version = (
            int(
                conn.execute(
                    select(func.coalesce(func.max(dpias.c.version), 0)).where(dpias.c.dataset == dataset)
                ).scalar_one()
            )
            + 1
        )
    document = {
        "dpia_format": 1,
        "dataset": dataset,
        "version": version,
        "created_at": utc_iso(now),
        "created_by": actor,
        "schema_digest": registered_digest(svc, dataset),
        "triggers": found,
        "processing": [r for r in records_of_processing(svc.store, svc.taxonomy) if r["dataset"] == dataset],
        "necessity_and_proportionality": {
            "purposes": dict(schema.purposes),
            "deidentification": {k: v.model_dump() for k, v in schema.deidentify.items()},
            "retention": schema.retention,
            "minimisation": "governed reads return only the columns asked for, after the purpose's de-identification",
        },
        "risks": risks,
        "measures": {
            "technical": MEASURES,
            "privacy_budgets": [
                {"principal": b["principal"], "epsilon": b["epsilon"], "delta": b["delta"]} for b in budgets
            ],
            "models": trained,
        },
        "residual_risk": "high" if any(r["status"] == "fail" for r in risks) else "acceptable with the measures above",
    }
    body = rfc8785.dumps(json.loads(json.dumps(document, default=str)))
    digest = sha256_digest(body)
    with svc.store.write() as conn:
        conn.execute(
            dpias.insert().values(
                dataset=dataset,
                version=version,
                created_at=now,
                schema_digest=registered_digest(svc, dataset),
                digest=digest,
                document=body.decode(),
            )
        )
        seq = svc.ledger.emit(
            conn,
            DpiaRecorded,
            time=now,
            actor=actor,
            purpose="audit",
            dataset=dataset,
            version=version,
            change="generated",
            digest=digest,
            triggers=found,
        )
    return Recorded({"dataset": dataset, "version": version, "digest": digest, "document": document}, seq)


def sign(
    svc: ComplianceServices, dataset: str, signer: str, actor: str, version: int | None = None
) -> Recorded[dict[str, Any]]:
    """Sign the latest (or the given) version off; returns the dataset's DPIA status after."""
    if not signer.strip():
        raise InvalidInput("name who signs the DPIA off (the DPO, say)")
    now = svc.clock.now()
    with svc.store.write() as conn:
        q = select(dpias).where(dpias.c.dataset == dataset)
        q = q.where(dpias.c.version == version) if version else q.order_by(dpias.c.version.desc()).limit(1)
        row = conn.execute(q).first()
        if row is None:
            raise NotFound(f"no DPIA for {dataset}" + (f" version {version}" if version else ""))
        if row.signed_at is not None:
            raise InvalidInput(f"DPIA {dataset} v{row.version} was already signed off by {row.signed_by}")
        conn.execute(
            dpias.update()
            .where(dpias.c.dataset == dataset, dpias.c.version == row.version)
            .values(signed_by=signer, signed_at=now)
        )
        seq = svc.ledger.emit(
            conn,
            DpiaRecorded,
            time=now,
            actor=actor,
            purpose="audit",
            dataset=dataset,
            version=row.version,
            change="signed off",
            digest=row.digest,
            triggers=json.loads(row.document)["triggers"],
            signed_by=signer,
        )
    return Recorded(status(svc, dataset), seq)


def document(svc: ComplianceServices, dataset: str, version: int | None = None) -> dict[str, Any]:
    """A DPIA as written (its latest version, or `version`): the document for review, its digest and
    sign-off; NotFound when the dataset has none."""
    with svc.store.read() as conn:
        q = select(dpias).where(dpias.c.dataset == dataset)
        q = q.where(dpias.c.version == version) if version else q.order_by(dpias.c.version.desc()).limit(1)
        row = conn.execute(q).first()
    if row is None:
        raise NotFound(f"no DPIA for {dataset}" + (f" version {version}" if version else ""))
    return {
        "dataset": dataset,
        "version": row.version,
        "digest": row.digest,
        "created_at": utc_iso(as_utc(row.created_at)),
        "signed_by": row.signed_by,
        "signed_at": utc_iso(as_utc(row.signed_at)) if row.signed_at else None,
        "document": json.loads(row.document),
    }


def status(svc: ComplianceServices, dataset: str) -> dict[str, Any]:
    """The dataset's latest DPIA and whether it is current (signed, schema unchanged, under a year old)."""
    current_schema = registered_digest(svc, dataset)
    with svc.store.read() as conn:
        row = conn.execute(
            select(dpias).where(dpias.c.dataset == dataset).order_by(dpias.c.version.desc()).limit(1)
        ).first()
    if row is None:
        return {"dataset": dataset, "version": None, "current": False, "why": "no DPIA"}
    why = None
    if row.signed_at is None:
        why = "not signed off"
    elif row.schema_digest != current_schema:
        why = "the dataset's schema changed since"
    elif as_utc(row.signed_at) + VALID_FOR < svc.clock.now():
        why = "signed off more than a year ago"
    return {
        "dataset": dataset,
        "version": row.version,
        "digest": row.digest,
        "signed_by": row.signed_by,
        "signed_at": utc_iso(as_utc(row.signed_at)) if row.signed_at else None,
        "current": why is None,
        "why": why,
    }
