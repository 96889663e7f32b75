"""API routes: datasets (list, describe, create, alter, drop), ingest by upload (a job), governed reads of
records (paged, purpose-bound, de-identified as declared; JSON, CSV or Parquet), and de-identification
of texts and tables the caller holds.

Purposes are the CLI's: describing and changing datasets is `administration`; an ingest is for the
purpose of the collection (`administration` unless the request names another); a read is for the
purpose the request declares.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

import pandas as pd
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from complai.app.ops.data import MAX_PAGE
from complai.app.session import Session
from complai.app.workspace import Workspace
from complai.errors import Cancelled, InvalidInput, WorkspaceError
from complai.inputs import csv_delimiter, text_encoding
from complai.service.api.common import CONFLICT, INTEGRITY, NOT_FOUND, Strict, problems
from complai.service.api.system import JobOut
from complai.service.deps import AdminSession, CallerDep, PurposeSession, WorkspaceDep
from complai.service.encoding import csv_text, json_rows
from complai.vault.ingest import IngestMode
from complai.vault.sources import FORMATS, Format, SourceOptions, parse_mapping

router = APIRouter()

CANCEL_CHECK_S = 0.5
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
JOB_HEADERS = {"Location": {"description": "The job: /api/v1/jobs/{id}", "schema": {"type": "string"}}}


# --- models --------------------------------------------------------------------------------------


class FieldOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    type: str
    category: str


class DatasetOut(BaseModel):
    """A dataset's declaration (its schema as declared), its schema version, and, for those who may see
    exact data, its record and subject counts."""

    model_config = ConfigDict(extra="allow")

    name: str
    subject_column: str
    jurisdiction: str
    retention: str
    purposes: dict[str, str | None]
    fields: list[FieldOut]
    schema_version: int
    created_at: str | None = None
    records: int | None = None
    subjects: int | None = None


class SchemaBody(Strict):
    """A dataset schema (docs/schema.md): as a JSON object (`definition`) or as YAML text (`yaml`)."""

    definition: dict[str, Any] | None = Field(default=None, description="The schema as a JSON object")
    yaml: str | None = Field(default=None, max_length=256 * 1024, description="The schema as YAML text")

    @model_validator(mode="after")
    def _one(self) -> SchemaBody:
        if (self.definition is None) == (self.yaml is None):
            raise ValueError("give the schema either as `definition` (JSON) or as `yaml` (text), not both")
        return self

    def source(self) -> str | dict[str, object]:
        return self.yaml if self.yaml is not None else dict(self.definition or {})


class AlterBody(SchemaBody):
    dry_run: bool = Field(default=False, description="Check the change against every stored record; change nothing")


class AlterOut(BaseModel):
    dataset: str
    dry_run: bool
    from_version: int
    version: int
    from_schema_digest: str
    schema_digest: str
    changes: dict[str, list[str]]
    records_checked: int
    notes: list[str]
    ledger_seq: int | None


class DropOut(BaseModel):
    dataset: str
    records_deleted: int
    subjects: int
    subjects_shredded: int
    subjects_kept: int
    keys_destroyed: int
    ledger_seq: int


class RecordsPage(BaseModel):
    """One page of a governed read: the rows, what de-identification was applied, and the ledger entry
    recording this page as a read."""

    dataset: str
    purpose: str
    columns: list[str]
    rows: list[dict[str, Any]]
    offset: int
    limit: int
    returned: int
    next_offset: int | None = Field(description="The next page's offset; null on the last page")
    deidentification: dict[str, Any] | None
    ledger_seq: int


class TextIn(Strict):
    texts: list[Annotated[str, Field(max_length=100_000)]] = Field(min_length=1, max_length=1000)
    default: str = Field(default="replace", description="Operator for every entity: replace, mask, hash, ...")
    operators: dict[str, str] | None = Field(default=None, description="Operator per entity type")
    regex_only: bool = Field(default=False, description="Pattern recognizers only (no NLP model)")
    subject: str = Field(default="", max_length=256, description="The subject whose date offset date_shift uses")


class ChangeOut(BaseModel):
    start: int
    end: int
    entity: str
    operator: str
    replacement: str


class TextResult(BaseModel):
    text: str
    changes: list[ChangeOut]


class TextOut(BaseModel):
    results: list[TextResult]
    ledger_seq: int | None


# a hierarchy: each value of a column mapped to its ancestors, most specific first
Hierarchy = Annotated[
    dict[str, Annotated[list[Annotated[str, Field(max_length=1000)]], Field(max_length=64)]],
    Field(min_length=1, max_length=100_000),
]


class TableIn(Strict):
    rows: list[dict[str, str | int | float | bool | None]] = Field(
        min_length=1, max_length=100_000, description="The table, one object of plain values a row"
    )
    quasi: list[str] = Field(min_length=1, description="Quasi-identifier columns")
    k: int = Field(ge=2, le=1_000_000)
    sensitive: str | None = None
    l: int | None = Field(default=None, ge=2)  # noqa: E741
    l_kind: Literal["distinct", "entropy"] = "distinct"
    t: float | None = Field(default=None, gt=0, le=1)
    numeric: list[str] | None = None
    suppress: float = Field(default=0.0, ge=0, le=1)
    keep: list[str] = Field(default_factory=list, description="Direct identifiers to keep, by name")
    direct_identifiers: Literal["drop", "pseudonymize"] = "drop"
    dataset: str | None = Field(default=None, description="A dataset whose schema declares the columns")
    hierarchies: dict[str, Hierarchy] | None = Field(
        default=None,
        max_length=64,
        description="Generalisation hierarchies of categorical quasi-identifiers, by column: each value of the "
        'column mapped to its ancestors, most specific first (e.g. {"education": {"Bachelors": ["Undergraduate", '
        '"Higher education", "*"], ...}}), as the CLI\'s --hierarchy files. A class of several values is labelled '
        "by their lowest common ancestor.",
    )


class TableOut(BaseModel):
    rows: list[dict[str, Any]]
    report: dict[str, Any]
    ledger_seq: int | None


# --- datasets ------------------------------------------------------------------------------------


def _dataset(doc: dict[str, Any]) -> DatasetOut:
    doc = dict(doc)
    created = doc.get("created_at")
    if created is not None and not isinstance(created, str):
        doc["created_at"] = created.isoformat().replace("+00:00", "Z")
    return DatasetOut.model_validate(doc)


@router.get(
    "/datasets",
    tags=["datasets"],
    summary="The datasets the caller may act on (exact counts only for those who may see exact data)",
    responses=problems(),
)
def list_datasets(
    session: AdminSession,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[DatasetOut]:
    docs = sorted(session.describe_datasets(), key=lambda d: str(d["name"]))
    return [_dataset(d) for d in docs[offset : offset + limit]]


@router.get(
    "/datasets/{name}",
    tags=["datasets"],
    summary="A dataset's schema, purposes, retention and schema version",
    responses=problems(NOT_FOUND),
)
def get_dataset(name: str, session: AdminSession) -> DatasetOut:
    (doc,) = session.describe_datasets(name)
    return _dataset(doc)


@router.post(
    "/datasets",
    tags=["datasets"],
    status_code=201,
    summary="Register a dataset from its schema (JSON or YAML)",
    responses=problems(CONFLICT),
)
def create_dataset(body: SchemaBody, session: AdminSession, response: Response) -> DatasetOut:
    spec = session.parse_schema(body.source())
    session.create_dataset(spec)
    (doc,) = session.describe_datasets(spec.name)
    response.headers["Location"] = f"/api/v1/datasets/{spec.name}"
    return _dataset(doc)


@router.put(
    "/datasets/{name}/schema",
    tags=["datasets"],
    summary="Change a dataset's schema to a new version (dry_run: the diff and the check, nothing written)",
    description="A narrowing change is checked against every stored record and refused with the number of "
    "records that do not fit; a change no migration makes safe (a field removed, its type changed, the "
    "name or subject column changed) is refused.",
    responses=problems(NOT_FOUND, CONFLICT, INTEGRITY),
)
def alter_dataset(name: str, body: AlterBody, session: AdminSession) -> AlterOut:
    result = session.alter_dataset(name, body.source(), dry_run=body.dry_run)
    return AlterOut(
        dataset=result.dataset,
        dry_run=result.dry_run,
        from_version=result.from_version,
        version=result.version,
        from_schema_digest=result.from_schema_digest,
        schema_digest=result.schema_digest,
        changes=result.changes,
        records_checked=result.records_checked,
        notes=result.notes,
        ledger_seq=result.seq,
    )


@router.delete(
    "/datasets/{name}",
    tags=["datasets"],
    summary="Drop a dataset: every record deleted, subjects left without records crypto-shredded",
    description="Erases for good: `confirm` must repeat the dataset's name. The name stays taken.",
    responses=problems(NOT_FOUND),
)
def drop_dataset(
    name: str,
    session: AdminSession,
    confirm: Annotated[str, Query(description="The dataset's name again: dropping erases its records for good")],
) -> DropOut:
    if confirm != name:
        raise InvalidInput("confirm must repeat the dataset's name; nothing was dropped")
    result = session.drop_dataset(name)
    return DropOut(
        dataset=result.dataset,
        records_deleted=result.records,
        subjects=result.subjects,
        subjects_shredded=result.subjects_shredded,
        subjects_kept=result.subjects_kept,
        keys_destroyed=result.keys_destroyed,
        ledger_seq=result.seq,
    )


# --- ingest --------------------------------------------------------------------------------------

UPLOADS = "uploads"
UPLOAD_STALE_S = 24 * 3600  # far longer than any ingest runs
UPLOAD_FILES = ("file", "consents")
MAX_FORM_FIELDS = 64
MAX_FIELD_BYTES = 16 * 1024


class IngestForm(Strict):
    """The text fields of an ingest upload: the CLI's options."""

    mode: IngestMode = "insert"
    data_format: Format | None = Field(default=None, alias="format")
    delimiter: str = ","
    encoding: str = "utf-8"
    mapping: list[str] = Field(default_factory=list, alias="map")
    subject_column: str | None = None


def _upload_schema() -> dict[str, Any]:
    fields = IngestForm.model_json_schema(by_alias=True)["properties"]
    binary = {"type": "string", "format": "binary"}
    return {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {**binary, "description": "The data file: CSV with a header row, JSON Lines or Parquet"},
            "consents": {**binary, "description": "Consent records (CSV: subject, purpose, ...)"},
            "mode": {**fields["mode"], "description": "What becomes of rows whose record is stored already"},
            "format": {"type": "string", "enum": list(FORMATS), "description": "Default: by the file's name"},
            "delimiter": {"type": "string", "default": ",", "description": "CSV field delimiter (\\t for tab)"},
            "encoding": {"type": "string", "default": "utf-8", "description": "Text encoding of a CSV or JSONL file"},
            "map": {"type": "array", "items": {"type": "string"}, "description": "Rename a column: source=field"},
            "subject_column": {"type": "string", "description": "Column holding the subject id"},
        },
    }


def _upload_folder(ws: Workspace) -> Path:
    """A new private folder (0700) for one upload, under the workspace's `uploads/` (0700): beside the
    data it becomes, on the disk sized for it (a system temp folder may be a small tmpfs)."""
    root = Path(ws.path) / UPLOADS
    if root.is_symlink():
        raise WorkspaceError(f"{UPLOADS}/ in the workspace is a symbolic link; remove it")
    root.mkdir(mode=0o700, exist_ok=True)
    os.chmod(root, 0o700)
    _sweep(root)
    folder = Path(tempfile.mkdtemp(prefix="ingest-", dir=root))
    owner = folder / OWNER_FILE
    owner.write_text(_process_id(os.getpid()) or "")
    owner.chmod(0o600)
    return folder


OWNER_FILE = ".owner"  # the process that took the upload: "<pid> <start time in clock ticks>"


def _process_id(pid: int) -> str | None:
    """A process named so that a later process with the same pid is not taken for it (Linux: its start
    time from /proc); None where that cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return f"{pid} {fields[19]}" if len(fields) > 19 else None


def _owner_gone(folder: Path) -> bool:
    """Whether the process that took this upload has ended (it removes its own folders while it lives)."""
    try:
        recorded = (folder / OWNER_FILE).read_text().strip()
    except OSError:
        return False
    if not recorded:
        return False
    return _process_id(int(recorded.split()[0])) != recorded


def sweep_uploads(workspace: Path) -> None:
    """Remove the upload folders of servers that stopped before their jobs ended (a job removes its own):
    personal data must not outlive its ingest, where no erasure or retention sweep would reach it. Run
    as a worker starts and before each upload."""
    root = Path(workspace) / UPLOADS
    if root.is_dir() and not root.is_symlink():
        _sweep(root)


def _sweep(root: Path) -> None:
    cutoff = time.time() - UPLOAD_STALE_S
    for folder in root.glob("ingest-*"):
        try:
            if folder.is_dir() and not folder.is_symlink() and (_owner_gone(folder) or folder.stat().st_mtime < cutoff):
                shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError):
            continue


class _Upload:
    """A multipart/form-data body read as it arrives: each file part written straight to its own 0600
    file in the upload's folder (never held in memory, never spooled elsewhere), the few text fields
    kept, counted and bounded."""

    def __init__(self, folder: Path, boundary: bytes) -> None:
        self.folder = folder
        self.files: dict[str, Path] = {}
        self.filenames: dict[str, str] = {}
        self.fields: dict[str, list[str]] = {}
        self._count = 0
        self._header, self._value, self._disposition = b"", b"", b""
        self._name: str | None = None
        self._out: BinaryIO | None = None
        self._text = bytearray()
        self._pending: list[bytes] = []
        callbacks: Any = {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, a, b: self._add_header(d[a:b], None),
            "on_header_value": lambda d, a, b: self._add_header(None, d[a:b]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }
        try:
            self.parser = MultipartParser(boundary, callbacks)
        except FormParserError:  # a boundary it will not take (over RFC 2046's 70 characters)
            raise InvalidInput("the upload's multipart boundary is not a valid one") from None

    def _begin(self) -> None:
        self._disposition, self._name, self._out, self._text = b"", None, None, bytearray()

    def _add_header(self, name: bytes | None, value: bytes | None) -> None:
        self._header += name or b""
        self._value += value or b""

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._disposition)
        raw = options.get(b"name")
        if raw is None:
            raise InvalidInput("every part of the upload needs a name (Content-Disposition: form-data; name=...)")
        name = raw.decode("utf-8", "replace")
        self._count += 1
        if self._count > MAX_FORM_FIELDS:
            raise InvalidInput(f"an upload has at most {MAX_FORM_FIELDS} parts")
        if name in UPLOAD_FILES:
            if name in self.files:
                raise InvalidInput(f"one {name!r} part per upload")
            target = self.folder / name
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            self._out = os.fdopen(os.open(target, flags, 0o600), "wb")
            self.files[name] = target
            self.filenames[name] = options.get(b"filename", b"").decode("utf-8", "replace")
        elif name not in {"mode", "format", "delimiter", "encoding", "map", "subject_column"}:
            raise InvalidInput(f"unknown upload field {name[:64]!r}")
        self._name = name

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._out is not None:
            self._pending.append(data[start:end])
        else:
            self._text += data[start:end]
            if len(self._text) > MAX_FIELD_BYTES:
                raise InvalidInput(f"upload field {self._name!r} is over {MAX_FIELD_BYTES} bytes")

    def _end(self) -> None:
        if self._out is not None:
            self._flush()
            self._out.close()
            self._out = None
        elif self._name is not None:
            try:
                value = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"upload field {self._name!r} is not UTF-8 text") from None
            self.fields.setdefault(self._name, []).append(value)

    def _flush(self) -> None:
        if self._out is not None and self._pending:
            self._out.write(b"".join(self._pending))
        self._pending.clear()

    async def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except MultipartParseError:
            raise InvalidInput("the upload is not a well-formed multipart/form-data body") from None
        if self._pending:
            await run_in_threadpool(self._flush)

    def finish(self) -> IngestForm:
        try:
            self.parser.finalize()
        except MultipartParseError:
            raise InvalidInput("the upload is not a well-formed multipart/form-data body") from None
        if self._out is not None:  # a part the body never ended
            self._out.close()
            raise InvalidInput("the upload ended inside a part")
        if "file" not in self.files:
            raise InvalidInput("the upload needs a 'file' part: the data file")
        values: dict[str, Any] = {}
        for name, got in self.fields.items():
            if name == "map":
                values[name] = got
            elif len(got) > 1:
                raise InvalidInput(f"upload field {name!r} is given {len(got)} times")
            else:
                values[name] = got[0]
        try:
            return IngestForm.model_validate(values)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None


@router.post(
    "/datasets/{name}/ingest",
    tags=["datasets"],
    status_code=202,
    summary="Encrypt and store an uploaded file's rows, as a job (all or nothing; a cancel rolls back)",
    description="A CSV with a header row, JSON Lines or Parquet file, with optional consent records (a CSV: "
    "subject, purpose, ...), as multipart/form-data. `mode`: insert refuses rows whose record is stored "
    "already, append skips them, upsert replaces them (needs the schema's record_key), replace replaces the "
    "dataset's records (and needs admin on the dataset, as dropping it does). Consents may only name subjects "
    "the upload creates, unless the caller may record consents. The caller is authorised before the body is "
    "read; the file is written as it arrives "
    "to a private file under the workspace, removed once the job is over.",
    responses={**problems(NOT_FOUND), 202: {"description": "The ingest job", "headers": JOB_HEADERS}},
    openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _upload_schema()}}}},
)
async def ingest(
    name: str,
    who: CallerDep,
    ws: WorkspaceDep,
    request: Request,
    response: Response,
    purpose: Annotated[str, Query(description="Purpose of the collection")] = "administration",
) -> JobOut:
    # an async route, so that the body is read only once the caller is authorised, and streamed to disk;
    # every session call runs in the thread pool, as a sync route's would
    session = await run_in_threadpool(ws.session, who, purpose)
    spec = await run_in_threadpool(session.dataset_schema, name, "ingest")  # before a byte is kept
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise InvalidInput("send the file as multipart/form-data (a 'file' part, and the options as fields)")
    folder = await run_in_threadpool(_upload_folder, ws)
    try:
        upload = _Upload(folder, params[b"boundary"])
        try:
            async for chunk in request.stream():
                await upload.feed(chunk)
        except ClientDisconnect:
            raise InvalidInput("the upload ended before its last part") from None
        form = upload.finish()
        if form.mode == "replace":  # it deletes stored records: what dropping the dataset needs, before a job
            await run_in_threadpool(session.dataset_schema, name, "admin")
        csv_delimiter(form.delimiter)
        text_encoding(form.encoding)
        renames = parse_mapping(form.mapping)
        if form.subject_column and form.subject_column != spec.subject_column:
            if form.subject_column in renames:
                raise InvalidInput(f"subject_column {form.subject_column!r} is also given to map")
            renames[form.subject_column] = spec.subject_column
        fmt = form.data_format or _format_of(upload.filenames["file"])
        options = SourceOptions(format=fmt, delimiter=form.delimiter, encoding=form.encoding, mapping=renames)
        work = _ingest_work(name, upload.files["file"], upload.files.get("consents"), form.mode, options)
        # the folder goes with the work: after it ran, or when a job cancelled before it started drops it
        weakref.finalize(work, shutil.rmtree, folder, True)
        job = await run_in_threadpool(request.app.state.jobs.submit, session, "dataset.ingest", work, unit="rows")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return JobOut.model_validate(job.as_dict())


def _format_of(filename: str | None) -> Format:
    suffix = Path(filename or "").suffix.lower()
    formats: dict[str, Format] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
    return formats.get(suffix, "csv")


def _ingest_work(
    dataset: str, data: Path, consents: Path | None, mode: str, options: SourceOptions
) -> Any:  # a Work (service/jobs.py)
    """The ingest as a job. The ingest holds the store's write transaction from its first pass to its
    commit, so a cancel is looked for without writing (in this process first, then read from the store:
    a report would wait on the transaction); the
    rows stored so far are kept in the job's progress, written once the transaction is over."""

    def work(session: Session, progress: Any) -> dict[str, Any]:
        last = 0.0

        def told(stage: str, done: int, total: int) -> None:
            nonlocal last
            if stage == "storing":  # rows (the checking pass counts bytes of the file)
                progress.done, progress.total = done, total
            now = time.monotonic()
            final = stage == "storing" and done >= total
            if final or now - last >= CANCEL_CHECK_S:
                last = now
                if progress.cancel_requested():
                    raise Cancelled("the ingest was cancelled; nothing was stored")

        try:
            if progress.cancel_requested():
                raise Cancelled("the ingest was cancelled before it started; nothing was stored")
            result = session.ingest(dataset, data, consents, mode=mode, options=options, progress=told)
        finally:
            shutil.rmtree(data.parent, ignore_errors=True)
        session.job_progress(progress.job_id, result.rows, result.rows, "rows")
        out = dict(result.__dict__)
        out["ledger_seq"] = out.pop("seq")
        return out

    return work


# --- governed reads ------------------------------------------------------------------------------

_RECORDS_CONTENT = {
    "application/json": {},
    CSV: {"schema": {"type": "string"}},
    PARQUET: {"schema": {"type": "string", "format": "binary"}},
}


_MEDIA = {"application/json": "json", CSV: "csv", PARQUET: "parquet"}


def _wanted(fmt: str | None, accept: str) -> str:
    """`format` if given; else the media type in `Accept` with the highest quality (RFC 9110 12.5.1: a
    q of 0 means "not this"; among equals, the first named); JSON when Accept names none of the three."""
    if fmt is not None:
        return fmt
    best, best_q = "json", 0.0
    for item in accept.lower().split(","):
        media, *params = (part.strip() for part in item.split(";"))
        kind = _MEDIA.get(media)
        if kind is None:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q:
            best, best_q = kind, q
    return best


@router.get(
    "/datasets/{name}/records",
    tags=["datasets"],
    summary="A page of the records this purpose may see, de-identified as the dataset declares (recorded)",
    description="Each request is one governed read, recorded in the ledger with the rows and subjects of its "
    "page. JSON by default; CSV with `Accept: text/csv` or `format=csv`; Parquet with `format=parquet`. "
    "Pages follow the store's order of the records; `next_offset` is the next page's start.",
    responses={
        **problems(NOT_FOUND, INTEGRITY),
        200: {
            "description": "The page (CSV and Parquet carry the ledger entry and paging in headers)",
            "content": _RECORDS_CONTENT,
            "headers": {
                "X-Complai-Ledger-Seq": {"description": "The read's ledger entry", "schema": {"type": "integer"}},
                "X-Complai-Next-Offset": {"description": "The next page's offset", "schema": {"type": "integer"}},
            },
        },
    },
)
def read_records(
    name: str,
    session: PurposeSession,
    request: Request,
    columns: Annotated[
        list[str] | None, Query(description="Columns to read (repeat, or comma-separated); default all")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
    fmt: Annotated[Literal["json", "csv", "parquet"] | None, Query(alias="format")] = None,
) -> Any:
    wanted = [c.strip() for part in columns or [] for c in part.split(",") if c.strip()] or None
    page = session.read_page(name, wanted, offset=offset, limit=limit)
    frame = page.frame
    returned = len(frame)
    next_offset = offset + returned if returned == limit else None
    kind = _wanted(fmt, request.headers.get("accept", ""))
    if kind == "json":
        envelope = RecordsPage(
            dataset=name,
            purpose=session.purpose,
            columns=[str(c) for c in frame.columns],
            rows=[],
            offset=offset,
            limit=limit,
            returned=returned,
            next_offset=next_offset,
            deidentification=page.deidentification,
            ledger_seq=page.ledger_seq,
        ).model_dump(mode="json", exclude={"rows"})
        # the rows as polars writes them from Arrow columns, spliced into the page: encoding a thousand
        # rows through Python dicts cost as much as the read itself, and pandas' writer a third of it
        head = json.dumps(envelope)[:-1].encode() + b', "rows": '
        return Response(head + json_rows(frame) + b"}", media_type="application/json")
    headers = {"X-Complai-Ledger-Seq": str(page.ledger_seq)}
    if next_offset is not None:
        headers["X-Complai-Next-Offset"] = str(next_offset)
    if kind == "csv":
        return Response(csv_text(frame), media_type=CSV + "; charset=utf-8", headers=headers)
    buffer = io.BytesIO()
    _for_parquet(frame).to_parquet(buffer, index=False)
    return Response(buffer.getvalue(), media_type=PARQUET, headers=headers)


def _for_parquet(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns of mixed values (a generalised quasi-identifier) as text, which Parquet can type."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = [None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v) for v in out[col]]
    return out


# --- de-identification of what the caller holds -------------------------------------------------


@router.post(
    "/deid/text",
    tags=["deid"],
    summary="Find and transform personal data in texts the caller holds (one recorded run)",
    responses=problems(),
)
def deid_text(body: TextIn, session: PurposeSession) -> TextOut:
    results = session.deidentify_text(body.texts, body.default, body.operators, body.regex_only, body.subject)
    return TextOut(
        results=[
            TextResult(text=text, changes=[ChangeOut.model_validate(c.__dict__) for c in changes])
            for text, changes in results
        ],
        ledger_seq=session.last_seq,
    )


@router.post(
    "/deid/table",
    tags=["deid"],
    summary="k-anonymise a table the caller holds (direct identifiers dropped or pseudonymised; recorded)",
    description="Categorical quasi-identifiers generalise to sets of their values, or, given a hierarchy, to "
    "their values' lowest common ancestor; a hierarchy that does not cover every value of its column, or is "
    "given for a column that is not a categorical quasi-identifier, is refused with nothing recorded.",
    responses=problems(NOT_FOUND),
)
def deid_table(body: TableIn, session: PurposeSession) -> TableOut:
    frame = pd.DataFrame(body.rows)
    missing = [c for c in [*body.quasi, *([body.sensitive] if body.sensitive else [])] if c not in frame.columns]
    if missing:
        raise InvalidInput(f"column(s) {missing} are not in the table")
    for col in body.hierarchies or {}:
        # the engine generalises a numeric column to ranges unless `numeric` leaves it out: a hierarchy
        # for it would be ignored
        if body.numeric is None and col in body.quasi and pd.api.types.is_numeric_dtype(frame[col]):
            raise InvalidInput(
                f"column {col!r} is numeric, generalised to ranges: to generalise it by its hierarchy, name the "
                "numeric quasi-identifiers (numeric) without it"
            )
    out, report = session.deidentify_table(
        frame,
        body.dataset,
        quasi=body.quasi,
        k=body.k,
        sensitive=body.sensitive,
        l=body.l,
        l_kind=body.l_kind,
        t=body.t,
        numeric=body.numeric,
        hierarchies=body.hierarchies,
        suppress=body.suppress,
        keep=body.keep,
        direct_identifiers=body.direct_identifiers,
    )
    rows = json.loads(out.to_json(orient="records", date_format="iso")) if len(out) else []
    return TableOut(
        rows=rows, report=json.loads(json.dumps(report.as_dict(), default=str)), ledger_seq=session.last_seq
    )
