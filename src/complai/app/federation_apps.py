"""complai's Flower apps, bound to workspaces: each organisation's ClientApp acts through a session of
its own workspace (its owner, the federated-training purpose), the ServerApp records each round through
a session of the server's workspace.

`server_app` and `client_app` are the deployment's entry points: Flower loads them by name (the Flower
App that app/federation.py's `serve` submits), the SuperLink's side with the spec and the server's
workspace from the run config, each SuperNode with its organisation's workspace from its node config.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from complai.access.identity import OWNER
from complai.app.session import Session
from complai.app.workspace import Workspace
from complai.federated import deploy, engine
from complai.federated.flower import make_client_app, make_server_app, run_rounds


@contextmanager
def federated_session(path: Path, purpose: str = engine.PURPOSE) -> Iterator[Session]:
    """A session of the workspace at `path`, bound to its owner and the run's purpose (by default
    federated training), open for as long as the block runs."""
    with Workspace.open(path) as ws:
        yield ws.session(OWNER, purpose)


def org_workspace(context: Context, paths: list[str]) -> Path:
    """The organisation's workspace: the node's `workspace` setting (deployment) or its partition's
    entry in `paths` (simulation)."""
    cfg = context.node_config
    if "workspace" in cfg:
        return Path(str(cfg["workspace"]))
    return Path(paths[int(cfg["partition-id"])])


def _organisations(paths: list[str]) -> Callable[[Context, str], AbstractContextManager[Session]]:
    def open_organisation(context: Context, purpose: str) -> AbstractContextManager[Session]:
        return federated_session(org_workspace(context, paths), purpose)

    return open_organisation


def simulated_client_app(spec: engine.FederatedSpec, paths: list[str]) -> ClientApp:
    """The ClientApp of a simulation: partition i is the organisation whose workspace is paths[i]."""
    return make_client_app(spec, _organisations(paths))


def simulated_server_app(
    spec: engine.FederatedSpec,
    server_ws: Path,
    run_id: str,
    sink: Path,
    on_round: engine.RoundProgress | None = None,
) -> ServerApp:
    """The ServerApp of a simulation: rounds recorded in `server_ws`, the outcome written to `sink`,
    each round's summary handed to `on_round`."""
    return make_server_app(spec, run_id, sink, lambda: federated_session(server_ws, spec.purpose), on_round)


def _deployed_server() -> ServerApp:
    """The ServerApp `flwr run` starts: spec and server workspace from the run config; the outcome in
    the server's workspace, where `complai federated server` waits for it."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        spec = engine.FederatedSpec.model_validate_json(str(context.run_config["spec"]))
        workspace = Path(str(context.run_config["server-workspace"]))
        sink = deploy.run_sink(workspace, context.run_id)
        sink.parent.mkdir(parents=True, exist_ok=True)
        try:
            out = run_rounds(grid, spec, f"run-{context.run_id}", lambda: federated_session(workspace, spec.purpose))
            out.pop("weights")
            sink.write_text(json.dumps({"ok": True, **out}))
        except Exception as exc:
            sink.write_text(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
            raise

    return app


server_app = _deployed_server()
# the spec comes with the run's messages; the organisation's workspace from the node's config
client_app = make_client_app(None, _organisations([]))
