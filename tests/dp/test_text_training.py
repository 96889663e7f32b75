"""The seed's text task: support messages de-identified by the governed read, then a BERT encoder
fine-tuned with DP (a tiny random BERT here; MiniLM in the benchmark)."""

from __future__ import annotations

import pandas as pd

from complai.access.identity import OWNER
from complai.app.workspace import Workspace
from complai.datasets.customer_service import generate, support_frame, support_schema_path
from complai.dp.training import recompute_epsilon
from complai.vault.schema import load_schema


def test_text_model_trains_on_deidentified_messages_only(sqlite_ws: Workspace, monkeypatch) -> None:
    ws = sqlite_ws
    admin = ws.session(OWNER, "administration")
    admin.create_dataset(load_schema(support_schema_path(), ws.taxonomy))
    admin.ingest("support_messages", support_frame(160, seed=5))
    admin.set_budget("support_messages", 10.0, 1e-3)
    seen: list[pd.DataFrame] = []
    real = ws.models.train
    monkeypatch.setattr(
        ws.models, "train", lambda spec, schema, frame, **kw: seen.append(frame) or real(spec, schema, frame, **kw)
    )
    card = ws.session(OWNER, "train_ai_system").train(
        "support_messages",
        label="intent",
        text="message",
        model="bert",
        encoder="tiny",
        trainable_layers=1,
        target_epsilon=8.0,
        delta=1e-4,
        epochs=1,
        batch_size=16,
        learning_rate=1e-3,
    )
    assert card["data"]["deidentification"]["text"] == {"message": "replace"}
    assert card["architecture"]["encoder"] == "tiny" and recompute_epsilon(card) == card["privacy"]["epsilon"]
    assert card["parameters"]["trainable"] < card["parameters"]["total"]
    # the messages the trainer saw hold none of the generated personal data (checked on the emails,
    # card numbers and IBANs, which the recognizers find exactly)
    text = "\n".join(seen[0]["message"])
    values = [v for m in generate(160, seed=5) for v, t in m.values() if t in ("EMAIL_ADDRESS", "IBAN_CODE")]
    assert values and not [v for v in values if v in text]
    assert "<EMAIL_ADDRESS>" in text
    assert "customer_id" not in seen[0].columns
    module, _ = ws.models.load(card["model_id"])
    assert sum(p.numel() for p in module.parameters()) == card["parameters"]["total"]
