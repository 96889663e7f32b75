"""Every command loads the CLI: it must not pull in the heavy libraries only some operations need
(measured in benchmarks as start-up time; checked here as the modules a bare import loads)."""

from __future__ import annotations

import json
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
]


def test_loading_the_cli_loads_no_heavy_library():
    code = "import json, sys; import complai.cli.main, complai; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    loaded = set(json.loads(out.stdout))
    assert sorted(m for m in HEAVY if m in loaded) == []
    assert "complai.app.session" in loaded  # the probe did load the front door
