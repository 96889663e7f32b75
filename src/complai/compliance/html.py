"""The audit report as one self-contained HTML page: summary, charts (inline SVG, so it prints and needs
no script), statement of applicability, per-control results with evidence, findings with what to do,
metrics, records of processing and the evidence appendix. Structure after SOC 2 / ISO 27701 reports."""

from __future__ import annotations

import html
import json
from datetime import datetime
from typing import Any

COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "not applicable": "#8c959f", "not evaluated": "#bf8700"}
SEVERITY = {"critical": 0, "high": 1, "medium": 2, "low": 3}

CSS = """
:root { --ink:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
       margin: 0; background: white; }
header { background: #0b2545; color: white; padding: 28px 48px; }
header h1 { margin: 0 0 4px; font-size: 26px; } header p { margin: 0; opacity: .85; }
main { padding: 24px 48px 64px; max-width: 1200px; }
h2 { border-bottom: 2px solid var(--line); padding-bottom: 4px; margin-top: 36px; }
.cards { display: flex; gap: 16px; flex-wrap: wrap; }
.card { flex: 1 1 160px; border: 1px solid var(--line); border-radius: 8px; padding: 14px 18px;
        background: var(--bg); }
.card .n { font-size: 30px; font-weight: 700; } .card .l { color: var(--muted); }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 20px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 12px; }
figcaption { font-weight: 600; margin-bottom: 6px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; }
th, td { border-bottom: 1px solid var(--line); padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg); }
.status { display: inline-block; padding: 1px 8px; border-radius: 10px; color: white; font-size: 13px;
          white-space: nowrap; }
.control { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; margin: 10px 0;
           break-inside: avoid; }
.control h3 { margin: 4px 0; font-size: 16px; } .muted { color: var(--muted); }
code { font-size: 12.5px; word-break: break-all; } .small { font-size: 12.5px; }
@media print { header { background: white; color: black; border-bottom: 3px solid black; }
  main { padding: 0 12px; } .control, figure, table { break-inside: avoid; } a { color: black; } }
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _status(s: str) -> str:
    return f'<span class="status" style="background:{COLOURS.get(s, "#555")}">{_e(s)}</span>'


def status_chart(summary: dict[str, int]) -> str:
    total = sum(summary.values()) or 1
    width, x, parts, legend = 360.0, 0.0, [], []
    for i, (k, n) in enumerate(summary.items()):
        w = width * n / total
        if n:
            parts.append(
                f'<rect x="{x:.1f}" y="10" width="{w:.1f}" height="34" fill="{COLOURS[k]}">'
                f"<title>{_e(k)}: {n}</title></rect>"
            )
        x += w
        lx, ly = 180 * (i % 2), 62 + 18 * (i // 2)
        legend.append(
            f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{COLOURS[k]}"/>'
            f'<text x="{lx + 16}" y="{ly + 11}" font-size="12">{_e(k)} ({n})</text>'
        )
    body = "".join(parts) + "".join(legend)
    return (
        f'<svg id="chart-status" viewBox="0 0 370 100" width="100%" role="img" aria-label="control status">{body}</svg>'
    )


def _empty(chart_id: str, text: str) -> str:
    label = f'<text x="10" y="30" font-size="13">{_e(text)}</text>'
    return f'<svg id="{chart_id}" viewBox="0 0 370 60" width="100%">{label}</svg>'


def burn_down_chart(series: dict[str, list[tuple[str, float]]], totals: dict[str, float]) -> str:
    """Cumulative epsilon spent per dataset against its total budget."""
    if not series:
        return _empty("chart-budget", "no privacy spending recorded")
    w, h, pad = 360, 180, 34
    times = sorted({t for s in series.values() for t, _ in s})
    t0, t1 = _ts(times[0]), _ts(times[-1])
    span = (t1 - t0) or 1.0
    top = max([*totals.values(), *[v for s in series.values() for _, v in s], 1e-9])
    palette = ["#0969da", "#8250df", "#bf3989", "#1a7f37", "#bc4c00"]
    out = [
        f'<line x1="{pad}" y1="{h - pad}" x2="{w}" y2="{h - pad}" stroke="#8c959f"/>',
        f'<line x1="{pad}" y1="10" x2="{pad}" y2="{h - pad}" stroke="#8c959f"/>',
        f'<text x="2" y="16" font-size="11">{top:.3g}</text><text x="2" y="{h - pad}" font-size="11">0</text>',
    ]
    for i, (ds, pts) in enumerate(sorted(series.items())):
        colour = palette[i % len(palette)]
        coords = [(pad + (w - pad) * (_ts(t) - t0) / span, (h - pad) - (h - pad - 10) * v / top) for t, v in pts]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2">'
            f"<title>{_e(ds)}</title></polyline>"
        )
        if ds in totals:
            y = (h - pad) - (h - pad - 10) * totals[ds] / top
            out.append(
                f'<line x1="{pad}" y1="{y:.1f}" x2="{w}" y2="{y:.1f}" stroke="{colour}" stroke-dasharray="4 3"/>'
            )
        out.append(
            f'<text x="{pad + 6}" y="{h - 8 - 14 * i}" font-size="11" fill="{colour}">'
            f"{_e(ds)}: epsilon spent; dashed: its budget</text>"
        )
    body = "".join(out)
    return f'<svg id="chart-budget" viewBox="0 0 {w + 10} {h}" width="100%" role="img" aria-label="budget">{body}</svg>'


def deadline_chart(requests: list[dict[str, Any]]) -> str:
    open_ = [r for r in requests if r.get("closed_at") is None]
    if not open_:
        return _empty("chart-deadlines", "no open subject requests")
    rows = sorted(open_, key=lambda r: r["days_left"])[:12]
    scale = max(max(abs(r["days_left"]) for r in rows), 1.0)
    out = []
    for i, r in enumerate(rows):
        left = r["days_left"]
        colour = "#cf222e" if left < 0 else ("#bf8700" if left < 7 else "#1a7f37")
        width = 200 * abs(left) / scale
        out.append(
            f'<text x="0" y="{16 + 20 * i}" font-size="11">{_e(r["id"])}</text>'
            f'<rect x="120" y="{6 + 20 * i}" width="{width:.1f}" height="13" fill="{colour}"/>'
            f'<text x="{124 + width:.1f}" y="{16 + 20 * i}" font-size="11">'
            f"{abs(left):g} days {'late' if left < 0 else 'left'}</text>"
        )
    body = "".join(out)
    height = 20 * len(rows) + 10
    return f'<svg id="chart-deadlines" viewBox="0 0 370 {height}" width="100%" aria-label="deadlines">{body}</svg>'


def _ts(t: str) -> float:
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def render(report: dict[str, Any], report_digest: str, charts: dict[str, Any]) -> str:
    s, scope = report["summary"], report["scope"]
    controls = report["controls"]
    failing = sorted((c for c in controls if c["status"] == "fail"), key=lambda c: SEVERITY.get(c["severity"], 9))
    cards = "".join(
        f'<div class="card"><div class="n" style="color:{COLOURS[k]}">{v}</div><div class="l">{_e(k)}</div></div>'
        for k, v in s.items()
    )

    def articles(c: dict[str, Any]) -> str:
        return "; ".join(k.upper() + " " + ", ".join(v) for k, v in c["articles"].items())

    soa = "".join(
        f"<tr><td>{_e(c['id'])}</td><td>{_e(c['title'])}</td><td>{_e(articles(c))}</td>"
        f"<td>{_e(c['severity'])}</td><td>{_status(c['status'])}</td></tr>"
        for c in controls
    )
    findings = (
        "".join(
            f"<tr><td>{_e(c['severity'])}</td><td>{_e(c['id'])}</td><td>{_e(c['summary'])}</td>"
            f"<td>{_e(c['remediation'] or '')}</td></tr>"
            for c in failing
        )
        or '<tr><td colspan="4">No failing control.</td></tr>'
    )
    detail = []
    for c in controls:
        items = "".join(f"<li><code>{_e(i['item'])}</code>: {_e(i['problem'])}</li>" for i in c["items"][:50])
        more = f"<p class='muted'>and {len(c['items']) - 50} more</p>" if len(c["items"]) > 50 else ""
        evidence = ", ".join(
            f"{_e(k)} = <code>{_e(json.dumps(v) if not isinstance(v, str) else v)}</code>"
            for k, v in c["evidence"].items()
        )
        detail.append(
            f'<div class="control" id="control-{_e(c["id"])}">'
            f"<h3>{_e(c['id'])}: {_e(c['title'])} {_status(c['status'])}</h3>"
            f"<p>{_e(c['summary'])}</p>"
            + (f"<p class='muted'>Evidence: {evidence}</p>" if evidence else "")
            + (f"<ul>{items}</ul>{more}" if items else "")
            + (f"<p><b>What to do:</b> {_e(c['remediation'])}</p>" if c.get("remediation") else "")
            + "</div>"
        )
    recs = report.get("records_of_processing", [])
    seen: dict[str, dict[str, Any]] = {}
    for r in recs:
        seen.setdefault(r["dataset"], r)
    datasets_rows = "".join(
        f"<tr><td>{_e(d)}</td><td>{_e(r['description'] or '')}</td><td>{_e(r['data_subjects'])}</td>"
        f"<td class='small'>{_e(', '.join(r['data_categories']))}</td>"
        f"<td>{_e(', '.join(r['special_categories']) or '-')}</td><td>{_e(r['jurisdiction'])}</td>"
        f"<td>{_e(r['retention'])}</td></tr>"
        for d, r in seen.items()
    )
    ropa = "".join(
        f"<tr><td>{_e(r['dataset'])}</td><td>{_e(r['purpose_name'] or r['purpose'])}</td>"
        f"<td>{_e(r['lawful_basis'])} <span class='muted'>{_e(r['lawful_basis_article'] or '')}</span></td>"
        f"<td class='small'>{_e(json.dumps(r['deidentification']) if r['deidentification'] else '-')}</td>"
        f"<td>{_e(', '.join(x['recipient'] for x in r['recipients']) or 'none')}</td></tr>"
        for r in recs
    )
    metrics = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in charts.get("metrics", {}).items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(report["title"])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>
<body>
<header><h1>{_e(report["title"])}</h1>
<p>Generated {_e(report["generated_at"])} by {_e(report["generated_by"])} &middot;
workspace {_e(scope["workspace"])}</p></header>
<main>
<section id="scope"><h2>Scope</h2>
<p>All evidence in the workspace's store and its ledger up to entry {scope["ledger_size"] - 1}
(Merkle root <code>{_e(scope["ledger_root"])}</code>), audited against complai's control catalogue
(<code>{_e(report["catalogue_digest"])}</code>) with parameters {_e(json.dumps(scope["parameters"]))}.</p></section>
<section id="summary"><h2>Summary</h2><div class="cards">{cards}</div></section>
<section id="charts"><h2>At a glance</h2><div class="charts">
<figure><figcaption>Control status</figcaption>{charts["status"]}</figure>
<figure><figcaption>Privacy budget burn-down</figcaption>{charts["budget"]}</figure>
<figure><figcaption>Subject request deadlines</figcaption>{charts["deadlines"]}</figure>
</div></section>
<section id="system"><h2>System description</h2>
<h3>Datasets</h3>
<table><tr><th>dataset</th><th>description</th><th>subjects</th><th>data categories</th><th>special categories</th>
<th>jurisdiction</th><th>retention</th></tr>{datasets_rows}</table>
<h3>Records of processing (Art. 30)</h3>
<table id="ropa"><tr><th>dataset</th><th>purpose</th><th>lawful basis</th><th>de-identification</th>
<th>recipients</th></tr>
{ropa}</table></section>
<section id="applicability"><h2>Statement of applicability</h2>
<table><tr><th>control</th><th>title</th><th>articles</th><th>severity</th><th>result</th></tr>{soa}</table></section>
<section id="findings"><h2>Findings and recommendations</h2>
<table><tr><th>severity</th><th>control</th><th>finding</th><th>recommendation</th></tr>{findings}</table></section>
<section id="metrics"><h2>Metrics</h2><table>{metrics}</table></section>
<section id="controls"><h2>Results by control</h2>{"".join(detail)}</section>
<section id="appendix"><h2>Appendix: evidence</h2>
<p>Report digest, recorded in the ledger: <code id="report-digest">{_e(report_digest)}</code>.
Check this report with <code>complai audit verify report.json</code>.</p>
<p>Latest signed checkpoint:</p><pre><code>{_e(charts.get("checkpoint") or "none")}</code></pre></section>
</main></body></html>
"""
