"""Every command loads the CLI: it must not pull in the heavy libraries only some operations need, and
`complai --version`, `complai --help` and completing a command name load none of the front door
(measured in benchmarks/startup.py as time; checked here as the modules a process loads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = [
    "torch",
    "opacus",
    "transformers",
    "flwr",
    "ray",
    "opendp",
    "sklearn",
    "scipy.stats",
    "sqlglot",
    "faker",
    "spacy",
    "presidio_analyzer",
    "pyspark",
    "py4j",
]
# what a command that opens a workspace needs, and --version / --help / name completion must not load
FRONT_DOOR = ["pandas", "numpy", "sqlalchemy", "alembic", "pydantic", "complai.app", "complai.app.workspace"]

_PROBE = """
import json, os, sys
from complai.cli.main import main
try:
    main()
except SystemExit:
    pass
finally:
    with open(os.environ["PROBE_OUT"], "w") as fh:
        json.dump(sorted(sys.modules), fh)
"""


def _loaded(tmp_path, *args: str, env: dict[str, str] | None = None) -> set[str]:
    out = tmp_path / "modules.json"
    full_env = {**os.environ, "PROBE_OUT": str(out), **(env or {})}
    code = f"import sys; sys.argv = ['complai', *{list(args)!r}]\n{_PROBE}"
    subprocess.run([sys.executable, "-c", code], capture_output=True, env=full_env, check=False, timeout=120)
    return set(json.loads(out.read_text()))


def test_loading_every_command_loads_no_heavy_library():
    code = (
        "import json, sys, typer.main; from complai.cli.main import app;"
        "g = typer.main.get_command(app); ctx = g.make_context('complai', ['status'], resilient_parsing=True);"
        "g.load_all(ctx); print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    loaded = set(json.loads(out.stdout))
    assert sorted(m for m in HEAVY if m in loaded) == []
    assert {"complai.app.session", "complai.cli.vault", "complai.cli.federated"} <= loaded  # all were loaded


def test_version_and_help_load_no_front_door(tmp_path):
    for args in (["--version"], ["--help"], []):
        loaded = _loaded(tmp_path, *args)
        assert "complai.cli.main" in loaded, args  # the probe ran the CLI
        assert sorted(m for m in FRONT_DOOR if m in loaded) == [], args
        assert (
            sorted(
                m for m in loaded if m.startswith("complai.cli.") and m not in {"complai.cli.main", "complai.cli.state"}
            )
            == []
        ), args


def test_completing_a_command_name_loads_no_front_door(tmp_path):
    env = {"_COMPLAI_COMPLETE": "complete_bash", "COMP_WORDS": "complai to", "COMP_CWORD": "1"}
    loaded = _loaded(tmp_path, env=env)
    assert sorted(m for m in FRONT_DOOR if m in loaded) == []


def test_a_group_loads_only_its_own_module(tmp_path):
    loaded = _loaded(tmp_path, "token", "--help")
    assert "complai.cli.access" in loaded
    assert not {"complai.cli.vault", "complai.cli.federated", "complai.cli.deid"} & loaded
