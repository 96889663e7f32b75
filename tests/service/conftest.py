"""Fixtures for the HTTP service: a workspace on each backend, the app over it (through the ASGI
client, lifespan included), and tokens for principals with the built-in roles."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from complai.app.workspace import Workspace
from complai.config import ServiceSettings
from complai.service.app import create_app


@pytest.fixture
def service_settings(ws: Workspace) -> ServiceSettings:
    return ServiceSettings(workspace=Path(ws.path), max_body_bytes=64 * 1024, max_upload_bytes=8 << 20)


@pytest.fixture
def client(ws: Workspace, service_settings: ServiceSettings) -> Iterator[TestClient]:
    """The service over `ws` (an ASGI client: no socket); errors come back as responses, as a real
    client would see them."""
    app = create_app(service_settings, workspace=ws)
    with TestClient(app, raise_server_exceptions=False) as c:
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
