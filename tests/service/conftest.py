"""Fixtures for the HTTP service: a workspace on each backend, the app over it (through the ASGI
client, lifespan included), and tokens for principals with the built-in roles."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from complai.clock import ManualClock
from complai.config import ServiceSettings
from complai.service.app import create_app
from tests.service.api_helpers import with_customers


@pytest.fixture
def ws(sqlite_ws: Workspace) -> Workspace:
    """The service's tests run on SQLite; those that depend on the store take `any_ws`/`any_client`
    (both backends when COMPLAI_TEST_DATABASE_URL is set)."""
    return sqlite_ws


@pytest.fixture
def any_ws(tmp_path: Path, database_url: str | None, clock: ManualClock) -> Iterator[Workspace]:
    w = Workspace.init(tmp_path / "any", database_url=database_url, clock=clock)
    try:
        yield w
    finally:
        w.close()


def settings_for(w: Workspace) -> ServiceSettings:
    return ServiceSettings(workspace=Path(w.path), max_body_bytes=64 * 1024, max_upload_bytes=8 << 20)


@pytest.fixture
def service_settings(ws: Workspace) -> ServiceSettings:
    return settings_for(ws)


@pytest.fixture
def client(ws: Workspace, service_settings: ServiceSettings) -> Iterator[TestClient]:
    """The service over `ws` (an ASGI client: no socket); errors come back as responses, as a real
    client would see them."""
    app = create_app(service_settings, workspace=ws)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def any_client(any_ws: Workspace) -> Iterator[TestClient]:
    """As `client`, on each backend the run has."""
    with TestClient(create_app(settings_for(any_ws), workspace=any_ws), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def owner_token(ws: Workspace) -> str:
    return ws.session("owner", "security").create_token("owner", "P1D").token


@pytest.fixture
def token_for(ws: Workspace) -> Callable[..., str]:
    """A token for a new principal NAME holding `roles` (added and granted by the owner)."""

    def make(name: str, *roles: str, kind: str = "service") -> str:
        owner = ws.session("owner", "security")
        owner.add_principal(name, kind)
        for role in roles:
            owner.grant_role(name, role)
        return owner.create_token(name, "P1D").token

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def customers(ws: Workspace) -> Workspace:
    """The vault tests' customers dataset in `ws`, registered and ingested by the owner."""
    return with_customers(ws)
