"""`complai witness ...`: run a witness over HTTP (C2SP tlog-witness), and have one cosign this
workspace's latest checkpoint."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated

import typer

from complai.cli.common import console, err_console, open_session, print_exact
from complai.errors import IntegrityError, InvalidInput, NotFound

app = typer.Typer(help="Run a witness over HTTP and ask one to cosign (C2SP tlog-witness).", no_args_is_help=True)

TIMEOUT_S = 30


@app.command()
def serve(
    key: Annotated[Path, typer.Option("--key", help="The witness's key file (<dir>/witness.key) or its folder.")],
    log: Annotated[
        list[str], typer.Option("--log", help="A log it cosigns, as ORIGIN=VKEY (the log's note verifier key).")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8010,
) -> None:
    """Serve POST /add-checkpoint: cosign a log's checkpoint once it is consistent with the last one.

    The witness is one made by `complai ledger witness init`; its state (per log, the size and root it
    cosigned last) stays in its folder. No workspace is needed."""
    # heavy: FastAPI and uvicorn load only for this command
    import uvicorn

    # heavy: the witness's app is a FastAPI app
    from complai.service.witness import create_witness_app, parse_logs, witness_dir

    app_ = create_witness_app(witness_dir(key), parse_logs(log))

    err_console.print(f"complai witness {app_.state.witness.name}: listening on http://{host}:{port}/add-checkpoint")
    uvicorn.run(app_, host=host, port=port, log_level="warning", server_header=False)


def _post(url: str, body: bytes) -> tuple[int, str, str]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "text/plain"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r:  # noqa: S310 - an http(s) URL, checked below
            return int(r.status), r.headers.get("Content-Type", ""), r.read(65536).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.headers.get("Content-Type", ""), exc.read(65536).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        raise InvalidInput(f"cannot reach the witness at {url}: {getattr(exc, 'reason', exc)}") from None


@app.command()
def submit(
    url: Annotated[str, typer.Argument(help="The witness's add-checkpoint URL, e.g. http://host:8010/add-checkpoint.")],
) -> None:
    """Ask a witness over HTTP to cosign this workspace's latest checkpoint, and keep its cosignature
    when the witness is trusted here (`complai ledger witness add`)."""
    if not url.startswith(("http://", "https://")):
        raise InvalidInput("the witness URL must start with http:// or https://")
    with open_session("audit") as (_, session):
        notes = session.ledger_checkpoints()
        if not notes:
            raise NotFound("no checkpoint to cosign; run `complai ledger checkpoint` first")
        note = notes[-1]
        size = note.checkpoint.size
        old = 0
        proof: tuple[bytes, ...] = ()
        for _ in range(2):  # first as if new; a witness that knows the log answers 409 with its size
            body = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n"
            status, ctype, answer = _post(url, body.encode() + note.text().encode())
            if status == 409 and ctype.startswith("text/x.tlog.size") and answer.strip().isdigit():
                old = int(answer.strip())
                if old > size:
                    raise IntegrityError(f"the witness has cosigned size {old}, beyond this log's {size}")
                proof = session.ledger_consistency(old, size)[0] if 0 < old < size else ()
                continue
            break
        if status != 200:
            raise IntegrityError(f"the witness refused checkpoint {size} ({status}): {answer.strip()[:200]}")
        trusted = {k.name for k in session.ledger_witnesses()}
        for line in answer.splitlines():
            name = line.split(" ")[1] if line.count(" ") >= 2 else ""
            if name in trusted:
                session.ledger_add_cosignature(size, line)
                console.print(f"{name} cosigned checkpoint {size}")
            else:
                console.print(f"{name or 'an unknown witness'} cosigned checkpoint {size} (not stored: not trusted)")
                print_exact(line)
