"""Every command block of the documentation runs, in order, in a fresh workspace: docs cannot drift.

Per page (README.md and docs/*.md): a fresh folder, `complai init` into COMPLAI_WORKSPACE, then each
fenced block in order. ```sh and ```bash blocks run with `bash -euo pipefail` in that folder, each in
its own shell (files carry over, shell variables do not); ```python blocks run with this interpreter
there. A ```yaml block whose first line is a comment naming a file (`# spec.yaml`) is written to that
file, so the spec a page shows is the spec its commands use. ```text, ```yaml (otherwise), ```json,
```csv and ```cron blocks are shown, not run. A ```console block is for what cannot run on one machine
and must say so ("cannot run") within a few lines of it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
BIN = Path(sys.executable).parent

RUN = {"sh", "bash", "python"}
SHOWN = {"text", "yaml", "json", "csv", "cron"}
CONSOLE = "console"
# pages that document and measure, with nothing to run
IGNORED = {"docs/architecture.md", "docs/benchmarks.md"}
# a hang fails the block; the allowance is generous because a busy 2-core machine runs each command
# (a few seconds alone) several times slower
SECONDS_PER_LINE = 60
CONSOLE_REASON_LINES = 8

FENCE = re.compile(r"^(`{3,}|~{3,})\s*([^\s`]*)")
SPEC_FILE = re.compile(r"^#\s*([\w.-]+\.ya?ml)\b")


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # the opening fence's line, 1-based
    code: str


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown page, in order (a fence closes with the same marker, at least as long)."""
    out: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i].lstrip())
        if not m:
            i += 1
            continue
        marker, lang, start = m.group(1), m.group(2).lower(), i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (
            lines[i].lstrip().startswith(marker[0] * len(marker)) and not lines[i].strip().strip(marker[0])
        ):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"line {start + 1}: a fenced block that never closes")
        out.append(Block(lang, start + 1, "\n".join(body) + "\n"))
        i += 1
    return out


def page_ids() -> list[str]:
    pages = ["README.md", *(f"docs/{p.name}" for p in sorted(DOCS.glob("*.md")))]
    return [p for p in pages if p not in IGNORED]


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPLAI_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        COMPLAI_WORKSPACE=str(folder / "workspace"),
        FLWR_TELEMETRY_ENABLED="0",
        HOME=str(folder / "home"),  # not TMPDIR: Ray's sockets under a pytest folder pass AF_UNIX's path limit
        COLUMNS="120",
        PYTHONDONTWRITEBYTECODE="1",
    )
    (folder / "home").mkdir(exist_ok=True)
    return env


def _tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def _check_fences(page: str, found: list[Block], text: str) -> None:
    lines = text.splitlines()
    for b in found:
        known = RUN | SHOWN | {CONSOLE}
        fenced = b.lang or "(no language)"
        assert b.lang in known, f"{page}:{b.line}: a block fenced {fenced!r}; use one of {sorted(known)}"
        if b.lang == CONSOLE:
            end = b.line + b.code.count("\n")
            near = "\n".join(lines[max(0, b.line - 1 - CONSOLE_REASON_LINES) : end + CONSOLE_REASON_LINES])
            assert "cannot run" in near.lower(), (
                f"{page}:{b.line}: a console block without a nearby 'cannot run' saying why it is not run"
            )


def _run_block(page: str, b: Block, folder: Path, env: dict[str, str]) -> None:
    if b.lang == "python":
        argv = [sys.executable, "-c", b.code]
        limit = 5 * SECONDS_PER_LINE
    else:
        argv = ["bash", "-euo", "pipefail", "-c", b.code]
        limit = SECONDS_PER_LINE * (1 + sum(1 for ln in b.code.splitlines() if ln.strip()))
    try:
        r = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{page}:{b.line}: the {b.lang} block ran past {limit} s\n{b.code}")
    if r.returncode != 0:
        pytest.fail(
            f"{page}:{b.line}: the {b.lang} block exited {r.returncode}\n--- block\n{b.code}"
            f"--- stdout\n{_tail(r.stdout)}\n--- stderr\n{_tail(r.stderr)}"
        )


@pytest.mark.parametrize("page", page_ids())
def test_page_commands_run(page: str, tmp_path: Path) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    found = blocks(text)
    _check_fences(page, found, text)
    if not any(b.lang in RUN for b in found):
        return
    env = _env(tmp_path)
    init = subprocess.run(["complai", "init"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    for b in found:
        if b.lang == "yaml" and (m := SPEC_FILE.match(b.code)):
            (tmp_path / m.group(1)).write_text(b.code, encoding="utf-8")
        elif b.lang in RUN:
            _run_block(page, b, tmp_path, env)


@pytest.mark.parametrize("page", sorted(IGNORED))
def test_ignored_pages_hold_nothing_to_run(page: str) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    found = blocks(text)
    _check_fences(page, found, text)
    runnable = [b.line for b in found if b.lang in RUN or b.lang == CONSOLE]
    assert not runnable, f"{page}: blocks at lines {runnable} would run, but the documentation test skips this page"


def test_the_block_reader() -> None:
    page = "intro\n```sh\necho a\n```\n\n````text\n```sh\nnot a block\n```\n````\n```\nbare\n```\n"
    assert blocks(page) == [
        Block("sh", 2, "echo a\n"),
        Block("text", 6, "```sh\nnot a block\n```\n"),
        Block("", 11, "bare\n"),
    ]
    with pytest.raises(AssertionError, match="never closes"):
        blocks("```sh\necho a\n")
