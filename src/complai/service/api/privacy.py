"""API routes: differential privacy (queries, budgets), training and the model registry (cards,
membership-inference audits), and the federated runs the ledger recorded.

Purposes are the CLI's: a DP query and a budget's remainder are for the purpose the request declares;
budgets are shown and set for `administration`; training is for the spec's purpose (`train_ai_system`
by default); the model registry and federated runs are read for `audit`, and a model's audit runs for
the purpose the model was trained for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from complai.app.session import Session
from complai.dp.training import TrainingSpec
from complai.errors import InvalidInput
from complai.service.api.common import CONFLICT, INTEGRITY, NOT_FOUND, TOO_MANY, Strict, problems
from complai.service.api.system import JobOut
from complai.service.deps import AdminSession, AuditSession, CallerDep, PurposeSession, WorkspaceDep

if TYPE_CHECKING:
    from complai.dp.sql import QueryBuilder

router = APIRouter()

DEFAULT_TRAIN_PURPOSE = "train_ai_system"
JOB_HEADERS = {"Location": {"description": "The job: /api/v1/jobs/{id}", "schema": {"type": "string"}}}
MARKDOWN = "text/markdown"


# --- models --------------------------------------------------------------------------------------


NAME = r"^[a-z][a-z0-9_]{0,62}$"  # a dataset's or a field's name, as schemas declare them
Name = Annotated[str, Field(pattern=NAME, description="A dataset's or a field's name")]


class CountStat(Strict):
    statistic: Literal["count"]
    column: Name | None = Field(default=None, description="Count the column's non-null values (default: rows)")


class ColumnStat(Strict):
    statistic: Literal["sum", "mean", "variance", "median"]
    column: Name


class QuantileStat(Strict):
    statistic: Literal["quantile"]
    column: Name
    q: float = Field(gt=0, lt=1, description="The quantile's level (0.5: the median)")


Statistic = Annotated[CountStat | ColumnStat | QuantileStat, Field(discriminator="statistic")]


class BuiltQuery(Strict):
    """A query in parts, as `complai.dp.sql.QueryBuilder` builds it: its statistics in order, row
    predicates ANDed together, and at most one grouping column."""

    dataset: Name
    statistics: list[Statistic] = Field(min_length=1, max_length=64, description="The aggregates, in order")
    where: list[Annotated[str, Field(min_length=1, max_length=10_000)]] = Field(
        default_factory=list,
        max_length=64,
        description="Row predicates in the SQL subset, ANDed together, e.g. \"age > 30\", \"sex IN ('F', 'M')\"",
    )
    group_by: Name | None = Field(default=None, description="One column to group by (its values are released)")

    def builder(self) -> QueryBuilder:
        """The same query as a QueryBuilder, once its parts are checked to be what they say: each predicate
        one condition on its own (none closes the parentheses it is put in, or comments out what follows)."""
        # heavy: OpenDP and sqlglot (the query loads both anyway)
        from complai.dp.queries import Aggregate
        from complai.dp.sql import QueryBuilder, parse  # heavy: sqlglot

        q = QueryBuilder(self.dataset)
        wanted = []
        for s in self.statistics:
            if isinstance(s, CountStat):
                q.count(s.column)
                wanted.append(Aggregate("count", s.column))
            elif isinstance(s, QuantileStat):
                q.quantile(s.column, s.q)
                wanted.append(Aggregate("quantile", s.column, s.q))
            elif s.statistic == "median":
                q.median(s.column)
                wanted.append(Aggregate("quantile", s.column, 0.5))
            else:
                getattr(q, s.statistic)(s.column)
                wanted.append(Aggregate(s.statistic, s.column))
        for i, condition in enumerate(self.where):
            try:
                alone = parse(f"SELECT COUNT(*) FROM {self.dataset} WHERE {condition}")
            except InvalidInput as exc:
                raise InvalidInput(f"query.where[{i}]: {exc.message}") from None
            if alone.group_by is not None or len(alone.aggregates) != 1:
                raise InvalidInput(f"query.where[{i}] must be one row predicate")
            q.where(condition)
        if self.group_by is not None:
            q.group_by(self.group_by)
        try:
            parsed = parse(q.sql())
        except InvalidInput as exc:
            raise InvalidInput(f"query: {exc.message}") from None
        if (parsed.dataset, parsed.aggregates, parsed.group_by) != (self.dataset, wanted, self.group_by):
            raise InvalidInput("query: its parts do not make the query they name (where holds row predicates only)")
        return q


def _one_of_sql_or_query(schema: dict[str, Any]) -> None:
    """The schema says what the model takes: exactly one of sql and query, neither of them null."""
    for key in ("sql", "query"):
        prop = schema["properties"][key]
        (given,) = [s for s in prop.pop("anyOf") if s.get("type") != "null"]
        prop.pop("default", None)
        prop.update(given)
    schema["oneOf"] = [{"required": ["sql"]}, {"required": ["query"]}]


class QueryIn(Strict):
    """A DP query: SQL text (`sql`) or the same query in parts (`query`), exactly one of them."""

    model_config = ConfigDict(json_schema_extra=_one_of_sql_or_query)

    # neither is nullable: given, each is the query; absent, the other one is
    sql: str | None = Field(
        default=None,
        min_length=1,
        max_length=20_000,
        description='An aggregate in the SQL subset, e.g. "SELECT COUNT(*), AVG(age) FROM adult WHERE age > 30"',
    )
    query: BuiltQuery | None = Field(default=None, description="The query in parts (instead of sql)")
    epsilon: float = Field(gt=0, description="Privacy cost of the whole query")
    delta: float | None = Field(default=None, gt=0, lt=1, description="With a delta: Gaussian noise (zCDP)")
    max_rows: int = Field(default=1, ge=1, le=1_000_000, description="Rows each subject may contribute")
    selection_delta: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="The part of delta spent selecting GROUP BY keys that have no declared values (DP partition "
        "selection); by default half of delta",
    )

    @model_validator(mode="before")
    @classmethod
    def _not_null(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("sql", "query"):
                if key in data and data[key] is None:
                    raise ValueError(f"{key} may not be null: give exactly one of sql or query")
        return data

    @model_validator(mode="after")
    def _one_form(self) -> QueryIn:
        if (self.sql is None) == (self.query is None):
            raise ValueError("give exactly one of sql (SQL text) or query (the query in parts)")
        return self


class BudgetOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    dataset: str
    principal: str
    epsilon: float
    delta: float
    epsilon_remaining_at_delta: float


class AnswerOut(BaseModel):
    """A DP release: noisy values and their 95 % error bounds, the public parameters of the release, and
    the ledger entry that records it. Nothing exact and data-dependent (not even a row count)."""

    values: dict[str, Any]
    accuracy: dict[str, Any]
    epsilon: float
    delta: float
    rho: float
    mechanism: str
    dates: dict[str, Any] | None = None
    # partition selection's public parameters ({"threshold", "delta"}): only when GROUP BY keys were selected
    selection: dict[str, float] | None = None
    ledger_seq: int
    budget_remaining: BudgetOut

    @model_serializer(mode="wrap")
    def _without_unused_selection(self, handler: SerializerFunctionWrapHandler):  # type: ignore[no-untyped-def]  # no return type: the JSON schema stays the fields'
        """An answer without partition selection has no `selection` (as its ledger event has none)."""
        out: dict[str, Any] = handler(self)
        if out.get("selection") is None:
            out.pop("selection", None)
        return out


class BudgetIn(Strict):
    epsilon: float = Field(gt=0, description="The total epsilon")
    # the least delta the DP query path takes too: below it 1/delta overflows and no rho is defined
    delta: float = Field(ge=1e-100, lt=1, description="The total delta")
    principal: str = Field(default="*", max_length=128, description="A principal's own budget ('*': the dataset's)")


class TrainIn(Strict):
    spec: dict[str, Any] = Field(
        description="The training spec, as the CLI's spec file: dataset, label, model, target_epsilon, ..."
    )
    purpose: str | None = Field(default=None, description="Overrides the spec's purpose (default train_ai_system)")


class AuditIn(Strict):
    shadows: int = Field(default=8, ge=0, le=256, description="LiRA shadow models (0: loss threshold only)")
    seed: int = Field(default=0, ge=0, le=2**32 - 1, description="Seed of the shadow models")


class ModelOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    model_id: str
    dataset: str


class ModelDetail(ModelOut):
    card: dict[str, Any]


class FederatedRunOut(BaseModel):
    run_id: str
    rounds: int
    last_round: int | None
    coordinator: str | None
    secure_aggregation: bool | None
    dp: str | None
    noise_multiplier: float | None
    clip_norm: float | None
    sample_rate: float | None
    epsilon: float | None
    delta: float | None
    clients_sampled: int
    clients_dropped: int
    updates_sent: int
    datasets: list[str]
    first_seq: int | None
    last_seq: int | None
    started_at: str | None
    last_at: str | None


# --- DP queries and budgets ----------------------------------------------------------------------


@router.post(
    "/dp/query",
    tags=["dp"],
    summary="Answer an aggregate with differential privacy, spending the dataset's budget (recorded)",
    description="The query of `complai dp query`: as SQL text (`sql`) in its subset, or in parts (`query`: "
    "dataset, statistics, row predicates, a grouping column) as the library's QueryBuilder builds it; exactly "
    "one of the two. Both are authorised, answered and recorded alike. The answer holds only noisy values, "
    "their error bounds and public parameters; 409 when the budget would be overspent.",
    responses=problems(NOT_FOUND, CONFLICT),
)
def dp_query(body: QueryIn, session: PurposeSession) -> AnswerOut:
    query: str | QueryBuilder | None = body.query.builder() if body.query is not None else body.sql
    assert query is not None
    answer = session.dp_query(query, body.epsilon, body.delta, body.max_rows, selection_delta=body.selection_delta)
    seq, left = session.last_seq, session.last_budget
    assert seq is not None and left is not None
    return AnswerOut.model_validate({**answer.as_dict(), "ledger_seq": seq, "budget_remaining": left.as_dict()})


@router.get(
    "/datasets/{name}/budgets",
    tags=["dp"],
    summary="Every privacy budget on a dataset (its own and its principals') with what each has spent",
    responses=problems(NOT_FOUND),
)
def list_budgets(name: str, session: AdminSession) -> list[BudgetOut]:
    return [BudgetOut.model_validate(s.as_dict()) for s in session.budgets(name)]


@router.put(
    "/datasets/{name}/budgets",
    tags=["dp"],
    summary="Set a dataset's (or one principal's) total privacy budget (recorded)",
    responses=problems(NOT_FOUND),
)
def set_budget(name: str, body: BudgetIn, session: AdminSession) -> BudgetOut:
    state = session.set_budget(name, body.epsilon, body.delta, body.principal)
    return BudgetOut.model_validate(state.as_dict())


@router.get(
    "/datasets/{name}/budget",
    tags=["dp"],
    summary="The dataset's own budget and what remains of it, for those who may spend or change it",
    responses=problems(NOT_FOUND),
)
def get_budget(name: str, session: PurposeSession) -> BudgetOut:
    return BudgetOut.model_validate(session.budget(name).as_dict())


# --- training and models -------------------------------------------------------------------------


def _submitted(request: Request, response: Response, session: Session, kind: str, work: Any) -> JobOut:
    job = request.app.state.jobs.submit(session, kind, work)
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.model_validate(job.as_dict())


@router.post(
    "/models/train",
    tags=["models"],
    status_code=202,
    summary="Train a model (DP-SGD unless the spec says private: false) and store its card, as a job",
    description="Refused before the job starts when the spec is invalid or the principal may not train on its "
    "dataset for the purpose; the budget is checked and reserved when the job runs (a cancel after the first "
    "step keeps what was spent, as the ledger does).",
    responses={**problems(NOT_FOUND), 202: {"description": "The training job", "headers": JOB_HEADERS}},
)
def train(body: TrainIn, who: CallerDep, ws: WorkspaceDep, request: Request, response: Response) -> JobOut:
    data = dict(body.spec)
    spec_purpose = data.pop("purpose", DEFAULT_TRAIN_PURPOSE)
    purpose = body.purpose or spec_purpose
    if not isinstance(purpose, str):
        raise InvalidInput("spec.purpose must be a purpose's name")
    session = ws.session(who, purpose)
    dataset = data.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise InvalidInput("spec.dataset: a dataset's name is required")
    # authorised (and the dataset known) before the spec is checked; then what needs no data: the spec
    # itself and the purpose's lawful basis on the dataset
    schema = session.dataset_schema(dataset, "train")
    spec = TrainingSpec.parse(data)
    if not spec.private:  # a run without DP releases exact values: only for one who may read the data
        session.dataset_schema(dataset, "read")
    schema.basis(purpose)

    def work(s: Session, progress: Any) -> dict[str, Any]:
        card = s.train(spec=spec, progress=progress)
        return {"model_id": card["model_id"], "ledger_seq": s.last_seq, "card": dict(card)}

    return _submitted(request, response, session, "model.train", work)


@router.get("/models", tags=["models"], summary="Every stored model with its privacy parameters", responses=problems())
def list_models(
    session: AuditSession,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[ModelOut]:
    return [ModelOut.model_validate(m) for m in session.models()[offset : offset + limit]]


@router.get(
    "/models/{model_id}",
    tags=["models"],
    summary="A model's registry entry (digests, flag) with its card, once its integrity is checked",
    responses=problems(NOT_FOUND, INTEGRITY),
)
def get_model(model_id: str, session: AuditSession) -> ModelDetail:
    info = session.model(model_id)
    return ModelDetail.model_validate({**info, "card": dict(info["card"])})


@router.get(
    "/models/{model_id}/card",
    tags=["models"],
    summary="A model's card: JSON, or the Hugging Face style Markdown (format=md or Accept: text/markdown)",
    responses={
        **problems(NOT_FOUND, INTEGRITY),
        200: {
            "description": "The card",
            "content": {"application/json": {"schema": {"type": "object"}}, MARKDOWN: {"schema": {"type": "string"}}},
        },
    },
)
def model_card(
    model_id: str,
    session: AuditSession,
    request: Request,
    fmt: Annotated[Literal["json", "md"] | None, Query(alias="format")] = None,
) -> Any:
    card = session.model(model_id)["card"]  # a ModelCard
    markdown = fmt == "md" or (fmt is None and MARKDOWN in request.headers.get("accept", "").lower())
    if markdown:
        return PlainTextResponse(card.markdown(), media_type=MARKDOWN + "; charset=utf-8")
    return dict(card)


@router.post(
    "/models/{model_id}/audit",
    tags=["models"],
    status_code=202,
    summary="Membership-inference audit of a model (loss threshold and LiRA), as a job (recorded)",
    description="Only for a principal who may train on the model's dataset for the purpose it was trained for "
    "(else 403 at once) and read it for that purpose (else the job fails with 403: the report is exact); the "
    "audit re-reads the dataset for that purpose.",
    responses={**problems(NOT_FOUND, TOO_MANY), 202: {"description": "The audit job", "headers": JOB_HEADERS}},
)
def audit_model(
    model_id: str, body: AuditIn, who: CallerDep, ws: WorkspaceDep, request: Request, response: Response
) -> JobOut:
    purpose = ws.session(who, "audit").model_purpose(model_id)
    session = ws.session(who, purpose)

    def work(s: Session, progress: Any) -> dict[str, Any]:
        report = s.audit_model(model_id, shadows=body.shadows, seed=body.seed, progress=progress)
        return {k: v for k, v in report.items() if k != "report_path"}

    return _submitted(request, response, session, "model.audit", work)


# --- federated runs ------------------------------------------------------------------------------


@router.get(
    "/federated/runs",
    tags=["federated"],
    summary="The federated runs this workspace recorded: rounds, survivors, secure aggregation, DP spent",
    responses=problems(),
)
def federated_runs(session: AuditSession, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[FederatedRunOut]:
    return [FederatedRunOut.model_validate(r) for r in session.federated_runs(limit=limit)]
