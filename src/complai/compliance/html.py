"""The audit report as one self-contained HTML page, rendered from Jinja2 templates (templates/, autoescaped:
dataset names, principals and descriptions are user-controlled) with charts drawn by matplotlib (Agg,
embedded as PNG). Failures come first, then warnings, each with its items and the advice for its cause;
then passes, the model inventory, refused accesses, consent coverage and the charts. The Markdown
report and the notebook view render from the same templates and the same formatting (humanize.py)."""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import jinja2

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from complai.compliance import humanize
from complai.compliance.context import FAIL, NA, NOT_EVALUATED, PASS, STATUSES, WARN

COLOURS = {FAIL: "#cf222e", WARN: "#bf8700", PASS: "#1a7f37", NA: "#8c959f", NOT_EVALUATED: "#6e7781"}
SEVERITY = {"critical": 0, "high": 1, "medium": 2, "low": 3}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PALETTE = ["#0969da", "#8250df", "#bf3989", "#1a7f37", "#bc4c00", "#4d2d00", "#1b7c83", "#6e7781"]


def _environment() -> jinja2.Environment:
    """The templates' environment: HTML templates (*.html.j2) autoescaped, the Markdown one (*.md.j2) not."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("complai.compliance", "templates"),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2",), disabled_extensions=("md.j2",), default=True
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        count=humanize.count,
        number=humanize.number,
        period=humanize.period,
        days=humanize.days,
        when=humanize.when,
        value=humanize.value,
        percent=humanize.percent,
        plural=humanize.plural,
    )
    env.globals.update(colours=COLOURS, statuses=STATUSES)
    return env


TEMPLATES = _environment()


def ordered(controls: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Controls grouped by status in report order (failures, warnings, passes, not applicable, not
    evaluated); failures and warnings most severe first."""
    groups: dict[str, list[dict[str, Any]]] = {s: [] for s in STATUSES}
    for c in controls:
        groups.setdefault(c["status"], []).append(c)
    for s in (FAIL, WARN):
        groups[s].sort(key=lambda c: SEVERITY.get(str(c.get("severity")), 9))
    return groups


def context(report: dict[str, Any], report_digest: str) -> dict[str, Any]:
    """What every rendering of the report reads: the report, its digest, controls in report order."""
    return {"report": report, "digest": report_digest, "groups": ordered(report["controls"])}


def render(report: dict[str, Any], report_digest: str) -> str:
    """The full HTML page, charts included."""
    charts = {
        "activity": activity_chart(report.get("ledger_activity", {})),
        "budget": budget_chart(report.get("budget_series", {}), report.get("budget_totals", {})),
        "deadlines": deadline_chart(report.get("requests", [])),
    }
    return TEMPLATES.get_template("report.html.j2").render(**context(report, report_digest), charts=charts)


def summary(report: dict[str, Any], report_digest: str) -> str:
    """The summary alone (scope, counts, failures and warnings with their items): the notebook view."""
    return TEMPLATES.get_template("summary.html.j2").render(**context(report, report_digest))


def markdown(report: dict[str, Any], report_digest: str) -> str:
    return TEMPLATES.get_template("report.md.j2").render(**context(report, report_digest))


# --- charts --------------------------------------------------------------------------------------------


def _figure(height: float = 3.0) -> tuple[Figure, Any]:
    # heavy: matplotlib costs a second of start-up; only a rendered report draws charts
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # heavy: as above

    fig = Figure(figsize=(7.0, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(axis="y", color="#d1d9e0", linewidth=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _time(t: str) -> datetime:
    return datetime.fromisoformat(t.replace("Z", "+00:00"))


def _time_axis(ax: Any, fmt: str) -> None:
    """Dates on the x axis as `fmt` (UTC), slanted so that they do not overlap."""
    # matplotlib's date numbers are days since its epoch, 1970-01-01 (the default since 3.3)
    ax.xaxis.set_major_formatter(lambda x, _pos: (EPOCH + timedelta(days=float(x))).strftime(fmt))
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_horizontalalignment("right")


def activity_chart(activity: dict[str, dict[str, int]]) -> str | None:
    """Ledger events per UTC day, stacked by kind (the seven most frequent kinds, the rest as 'other')."""
    if not activity:
        return None
    totals: dict[str, int] = {}
    for kinds in activity.values():
        for k, n in kinds.items():
            totals[k] = totals.get(k, 0) + n
    top = sorted(totals, key=lambda k: (-totals[k], k))[:7]
    days = [datetime.fromisoformat(d) for d in activity]
    fig, ax = _figure()
    bottom = [0] * len(days)
    series = [(k, [activity[d].get(k, 0) for d in activity]) for k in top]
    rest = [sum(n for k, n in kinds.items() if k not in top) for kinds in activity.values()]
    if any(rest):
        series.append(("other", rest))
    for i, (kind, values) in enumerate(series):
        ax.bar(days, values, bottom=bottom, width=0.8, label=kind, color=PALETTE[i % len(PALETTE)])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xlabel("day (UTC)")
    ax.set_ylabel("ledger events per day")
    _time_axis(ax, "%Y-%m-%d")
    if len(days) == 1:
        ax.set_xlim(days[0] - timedelta(days=3), days[0] + timedelta(days=3))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def budget_chart(series: dict[str, list[list[Any]]], totals: dict[str, float]) -> str | None:
    """Cumulative epsilon spent per dataset over time, each against its total budget (dashed)."""
    if not series:
        return None
    fig, ax = _figure()
    for i, (dataset, points) in enumerate(sorted(series.items())):
        colour = PALETTE[i % len(PALETTE)]
        times = [_time(t) for t, _ in points]
        ax.step(times, [v for _, v in points], where="post", color=colour, linewidth=2, label=f"{dataset}: spent")
        ax.plot(times, [v for _, v in points], "o", color=colour, markersize=3)
        if dataset in totals:
            ax.axhline(totals[dataset], color=colour, linestyle="--", linewidth=1, label=f"{dataset}: budget")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("epsilon spent (cumulative)")
    ax.set_ylim(bottom=0)
    _time_axis(ax, "%Y-%m-%d %H:%M")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def deadline_chart(requests: list[dict[str, Any]]) -> str | None:
    """Days left until each open subject request's legal deadline (red: late, amber: under a week)."""
    open_ = sorted((r for r in requests if r.get("closed_at") is None), key=lambda r: r["days_left"])[:12]
    if not open_:
        return None
    fig, ax = _figure(max(1.6, 0.35 * len(open_) + 1.0))
    left = [float(r["days_left"]) for r in open_]
    colours = [COLOURS[FAIL] if d < 0 else (COLOURS[WARN] if d < 7 else COLOURS[PASS]) for d in left]
    labels = [f"{r['id']} ({r['type']})" for r in open_]
    ax.barh(range(len(open_)), left, color=colours)
    ax.set_yticks(range(len(open_)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="#1f2328", linewidth=0.8)
    ax.set_xlabel("days left until the legal deadline (negative: late)")
    ax.set_ylabel("open request")
    ax.grid(axis="x", color="#d1d9e0", linewidth=0.6)
    return _png(fig)
