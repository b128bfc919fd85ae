"""/docs and /redoc render in real headless Chromium with every host but the gateway's
unreachable: their assets are served by the gateway itself, never by a CDN.

Needs Debian's ``chromium`` at /usr/bin/chromium (skipped with a reason otherwise)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.backends.replay import ThreadedServer
from tests.support.fakes import FakeCaller
from tests.support.harness import config_dict, settings_for

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")


def _dom(url: str) -> str:
    run = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            # offline: no name resolves but the loopback address the gateway listens on
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian chromium (apt-get install chromium)"
)
def test_docs_render_operations_offline(tmp_path: Path, sqlite_url: str) -> None:
    app = create_app(settings_for(config_dict(tmp_path), sqlite_url), caller=FakeCaller())
    with ThreadedServer(app).running() as server:
        page = httpx.get(server.url + "/docs", timeout=10).text
        # every script, style and icon the page loads comes from the gateway
        refs = re.findall(r"""(?:src|href)=["']([^"']+)""", page)
        assert refs and all(r.startswith("/") for r in refs), refs
        assert httpx.get(server.url + "/docs-static/swagger-ui-bundle.js").status_code == 200
        dom = _dom(server.url + "/docs")
        redoc = _dom(server.url + "/redoc")
    # Swagger UI built the page from /openapi.json: one block per operation
    assert 'class="swagger-ui' in dom
    for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/models"):
        assert f'data-path="{path}"' in dom, path
    assert len(re.findall(r'class="opblock opblock-', dom)) >= 5
    # ReDoc too (its menu lists the operations)
    assert "chat_completions" in redoc or "Chat Completions" in redoc
