"""De-identification benchmark.

Text: on 2,000 generated customer-service messages (seed 99, never used while tuning), per-entity and
micro precision / recall / F1 (exact spans) and characters per second for complai (full and
regex-only) and for Presidio's default configuration with the same spaCy model, one call per message
and batched.

Tables: Mondrian k-anonymity on Adult (quasi-identifiers age,
education, marital-status, occupation, race, sex, native-country; sensitive income) for k = 2, 5, 10,
50: time, classes and normalised information loss, against anonypy's Mondrian on the same rows in the
same run (needs `pip install anonypy`; `make bench` installs it).

    python benchmarks/deid.py [--anonypy-k 5,50] [--out FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from complai.datasets import load_adult
from complai.deid.tabular import anonymize

sys.path.insert(0, str(Path(__file__).parent))
from common import write_results

console = Console()
QIS = ["age", "education", "marital_status", "occupation", "race", "sex", "native_country"]
NUMERIC = ["age"]


def anonypy_run(data: pd.DataFrame, k: int) -> dict[str, Any]:
    from anonypy import Preserver

    d = data[[*QIS, "income"]].copy()
    for c in QIS:
        if c not in NUMERIC:
            d[c] = d[c].astype("category")
    t0 = time.perf_counter()
    rows = Preserver(d, QIS, "income").anonymize_k_anonymity(k=k)
    seconds = time.perf_counter() - t0
    # normalised information loss of its output, with the same formula complai reports
    total = sum(r["count"] for r in rows)
    spans = {c: float(data[c].max() - data[c].min()) for c in NUMERIC}
    levels = {c: data[c].nunique() for c in QIS if c not in NUMERIC}
    loss = 0.0
    for r in rows:
        for c in QIS:
            value = r[c][0] if isinstance(r[c], list) else r[c]
            if c in NUMERIC:
                parts = str(value).split("-")
                width = float(parts[-1]) - float(parts[0]) if len(parts) == 2 else 0.0
                loss += r["count"] * width / spans[c]
            else:
                loss += r["count"] * (len(str(value).split(",")) - 1) / (levels[c] - 1)
    return {
        "seconds": seconds,
        "output_rows": len(rows),
        "rows_represented": total,
        "information_loss": loss / (total * len(QIS)),
        "columns_kept": len(QIS) + 1,
    }


def text_scores(found: list[list[tuple[int, int, str]]], msgs: list[Any]) -> dict[str, Any]:
    from collections import Counter

    tp, fp, fn = Counter(), Counter(), Counter()
    for m, got in zip(msgs, found, strict=True):
        got_set, want = set(got), set(m.spans)
        for g in got_set:
            (tp if g in want else fp)[g[2]] += 1
        for w in want - got_set:
            fn[w[2]] += 1
    per = {}
    for e in sorted(set(tp) | set(fn) | set(fp)):
        p = tp[e] / (tp[e] + fp[e]) if tp[e] + fp[e] else 0.0
        r = tp[e] / (tp[e] + fn[e]) if tp[e] + fn[e] else 0.0
        per[e] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": tp[e] + fn[e]}
    t, f, n = sum(tp.values()), sum(fp.values()), sum(fn.values())
    p, r = t / (t + f), t / (t + n)
    return {"per_entity": per, "micro": {"precision": p, "recall": r, "f1": 2 * p * r / (p + r)}}


def text_benchmark(n: int = 2000) -> dict[str, Any]:
    import tldextract
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from complai.datasets.customer_service import generate
    from complai.deid.analyzer import SPACY_MODEL, TextAnalyzer

    msgs = generate(n, seed=99)
    texts = [m.text for m in msgs]
    chars = sum(len(t) for t in texts)
    entities = sorted({s[2] for m in msgs for s in m.spans})
    out: dict[str, Any] = {"messages": n, "characters": chars}
    # complai
    for label, analyzer in (("complai", TextAnalyzer()), ("complai_regex_only", TextAnalyzer(regex_only=True))):
        analyzer.analyze("warm up, Jane Doe")
        t0 = time.perf_counter()
        found = analyzer.analyze_batch(texts)
        batched = time.perf_counter() - t0
        t0 = time.perf_counter()
        for t in texts[:500]:
            analyzer.analyze(t)
        single = (time.perf_counter() - t0) * n / 500
        out[label] = {
            **text_scores([[(f.start, f.end, f.entity) for f in fs] for fs in found], msgs),
            "chars_per_s_batched": chars / batched,
            "chars_per_s_single": chars / single,
        }
        console.print(
            f"  {label}: micro-F1 {out[label]['micro']['f1']:.3f}, {chars / batched:,.0f} chars/s batched, "
            f"{chars / single:,.0f} single"
        )
    # Presidio defaults with the same spaCy model (tldextract told not to fetch the suffix list)
    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=())
    engine = AnalyzerEngine(
        nlp_engine=NlpEngineProvider(
            nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": SPACY_MODEL}]}
        ).create_engine()
    )
    presidio_entities = [e for e in entities if e in engine.get_supported_entities()]
    engine.analyze(text="warm up, Jane Doe", language="en")
    t0 = time.perf_counter()
    found = [
        [(r.start, r.end, r.entity_type) for r in engine.analyze(text=t, language="en", entities=presidio_entities)]
        for t in texts
    ]
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    list(BatchAnalyzerEngine(engine).analyze_iterator(texts, language="en", entities=presidio_entities, batch_size=64))
    batched = time.perf_counter() - t0
    out["presidio_default"] = {
        **text_scores(found, msgs),
        "chars_per_s_batched": chars / batched,
        "chars_per_s_single": chars / single,
        "entities_it_supports": presidio_entities,
    }
    console.print(
        f"  presidio: micro-F1 {out['presidio_default']['micro']['f1']:.3f}, {chars / batched:,.0f} chars/s "
        f"batched, {chars / single:,.0f} single"
    )
    t = Table(
        "entity",
        "support",
        "complai P",
        "complai R",
        "complai F1",
        "presidio P",
        "presidio R",
        "presidio F1",
        title="PII detection (exact spans)",
    )
    for e in entities:
        c = out["complai"]["per_entity"].get(e, {})
        p = out["presidio_default"]["per_entity"].get(e, {})
        t.add_row(
            e,
            str(c.get("support", "")),
            *(f"{c.get(x, 0):.2f}" for x in ("precision", "recall", "f1")),
            *(f"{p.get(x, 0):.2f}" for x in ("precision", "recall", "f1")),
        )
    console.print(t)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--anonypy-k", default="5,50", help="k values to run anonypy at ('' to skip)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/deid.json"))
    ap.add_argument("--skip-text", action="store_true")
    args = ap.parse_args()
    text = None if args.skip_text else text_benchmark()
    adult = load_adult().drop(columns=["split"])
    data = adult.dropna(subset=QIS).reset_index(drop=True)  # anonypy cannot take missing values
    console.print(f"Adult: {len(data):,} rows with all quasi-identifiers present, {len(data.columns)} columns")
    results = []
    for k in (2, 5, 10, 50):
        t0 = time.perf_counter()
        out, report = anonymize(data, QIS, k, sensitive="income", numeric=NUMERIC)
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {
            "k": k,
            "complai_seconds": seconds,
            "complai_classes": report.classes,
            "complai_information_loss": report.utility["information_loss"],
            "complai_output_rows": len(out),
            "complai_columns_kept": len(out.columns),
        }
        console.print(
            f"  complai k={k}: {seconds:.2f}s, {report.classes:,} classes, loss {row['complai_information_loss']:.4f}"
        )
        _, l_rep = anonymize(data, QIS, k, sensitive="income", l=2, t=0.2, numeric=NUMERIC)
        row["complai_l2_t02"] = {
            "classes": l_rep.classes,
            "information_loss": l_rep.utility["information_loss"],
            "achieved": l_rep.achieved,
        }
        results.append(row)
    want = {int(x) for x in args.anonypy_k.split(",") if x.strip()}
    for row in results:
        if row["k"] in want:
            try:
                a = anonypy_run(data, row["k"])
            except ImportError:
                console.print("  anonypy is not installed: skipped")
                break
            row["anonypy"] = a
            console.print(
                f"  anonypy k={row['k']}: {a['seconds']:.2f}s, loss {a['information_loss']:.4f}, "
                f"{a['output_rows']:,} aggregated rows"
            )
    t = Table(
        "k",
        "complai s",
        "classes",
        "info loss",
        "with l=2,t=0.2 loss",
        "anonypy s",
        "anonypy loss",
        title="Mondrian on Adult",
    )
    for r in results:
        a = r.get("anonypy", {})
        t.add_row(
            str(r["k"]),
            f"{r['complai_seconds']:.2f}",
            f"{r['complai_classes']:,}",
            f"{r['complai_information_loss']:.4f}",
            f"{r['complai_l2_t02']['information_loss']:.4f}",
            f"{a['seconds']:.1f}" if a else "",
            f"{a['information_loss']:.4f}" if a else "",
        )
    console.print(t)
    write_results(args.out, {"text": text, "tables": {"rows": len(data), "quasi_identifiers": QIS, "results": results}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
