"""De-identification benchmark, tabular part: Mondrian k-anonymity on Adult (quasi-identifiers age,
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--anonypy-k", default="5,50", help="k values to run anonypy at ('' to skip)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/deid.json"))
    args = ap.parse_args()
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
    write_results(args.out, {"rows": len(data), "quasi_identifiers": QIS, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
