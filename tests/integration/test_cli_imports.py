"""Each ``tollgate`` command imports only what it needs: commands that touch no model load
neither litellm nor torch, transformers or scikit-learn, a report on a current store does
not load Alembic, and commands that read no store (``--help``, ``config check``) do not load
SQLAlchemy. Checked on the modules a real process has loaded when it exits (start-up
*times* are measured by ``bench/cli_startup.py``, not here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("litellm", "torch", "transformers", "sklearn", "alembic", "onnxruntime", "sqlalchemy")
PROBE = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: sys.stderr.write('\\nLOADED ' + json.dumps("
    f"sorted(m for m in {HEAVY!r} if m in sys.modules)) + '\\n'))\n"
    "sys.argv[0] = 'tollgate'\n"
    "from gateway.cli.main import main\n"
    "main()\n"
)
CONFIG = """\
backends:
  - {name: cheap, model: openai/gpt-4o-mini, api_key: os.environ/NO_SUCH_KEY_SET}
  - {name: mid, model: anthropic/claude-3-5-haiku-20241022, input_cost_per_token: 0.0000008,
     output_cost_per_token: 0.000004}
policies:
  default:
    candidates: [cheap, mid]
    objective: {kind: cheapest_adequate, min_success: 0.5, on_no_adequate: most_capable}
    predictor_fallback: cheap
routing: {default: default}
predictor: {enabled: false}
"""


def loaded(*args: str, env: dict[str, str]) -> tuple[list[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stderr.splitlines() if x.startswith("LOADED ")][-1]
    return json.loads(line.removeprefix("LOADED ")), done.stdout


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    out = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    out.update(
        TOLLGATE_CONFIG=str(config),
        TOLLGATE_DATABASE_URL=f"sqlite:///{tmp_path}/store.db",
        COLUMNS="200",
    )
    return out


def test_commands_that_touch_no_model_load_no_model_library(env: dict[str, str]) -> None:
    assert loaded("--help", env=env)[0] == []
    heavy, out = loaded("config", "check", env=env)
    assert heavy == [] and "catalog: $0.15 in / $0.6 out" in out  # priced without litellm
    heavy, _ = loaded("keys", "list", env=env)  # a new store: migrated (Alembic), no model
    assert heavy == ["alembic", "sqlalchemy"]
    heavy, out = loaded("report", "spend", env=env)  # the store is current now
    assert heavy == ["sqlalchemy"] and "TOTAL" in out
    heavy, out = loaded("route", "explain", "hello", "--json", env=env)  # predictor off
    assert heavy == [] and {c["name"] for c in json.loads(out)["candidates"]} == {"cheap", "mid"}
