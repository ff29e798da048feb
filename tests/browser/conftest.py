"""A real JupyterLab server and a headless Chromium for the extension's tests.

The server runs from this Python environment with an empty temp root, no
token and its own settings/workspaces dirs. The extension it loads is the one
built in the repo (replicate_jupyter/labextension, put first on JUPYTER_PATH)
when it exists, else the installed one; the tests fail clearly if neither is there.

Chromium is Debian's (/usr/bin/chromium, `apt-get install chromium`), never a
downloaded browser. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILT = REPO / "replicate_jupyter" / "labextension"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = os.environ.get("REPLICATE_JUPYTER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _installed_extension() -> Path | None:
    from jupyter_core.paths import jupyter_path

    for base in jupyter_path("labextensions"):
        candidate = Path(base) / "replicate-jupyter" / "package.json"
        if candidate.exists():
            return candidate.parent
    return None


class Lab:
    """A running `jupyter lab`."""

    def __init__(self, url: str, root: Path, env: dict[str, str], extension: Path, settings_dir: Path):
        self.url = url
        self.settings_dir = settings_dir
        self.root = root
        self.env = env
        self.extension = extension

    def notebook(self, name: str) -> dict:
        return json.loads((self.root / name).read_text())


@pytest.fixture(scope="session")
def lab():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    base = Path(tempfile.mkdtemp(prefix="rj-lab-"))
    root = base / "root"
    root.mkdir()
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        IPYTHONDIR=str(base / "ipython"),
        JUPYTER_PLATFORM_DIRS="1",
    )
    if (BUILT / "package.json").exists():
        share = base / "share" / "jupyter"
        (share / "labextensions").mkdir(parents=True)
        (share / "labextensions" / "replicate-jupyter").symlink_to(BUILT)
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(share), os.environ.get("JUPYTER_PATH")]))
        extension = BUILT
    else:
        installed = _installed_extension()
        if installed is None:
            pytest.fail("the extension is neither built (replicate_jupyter/labextension) nor installed: pip install .")
        extension = installed
    settings = base / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"checkForUpdates": False, "fetchNews": "false"})
    )
    port = _free_port()
    log = open(base / "lab.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyterlab",
            "--no-browser", "--allow-root",
            f"--port={port}", "--ServerApp.ip=127.0.0.1",
            "--ServerApp.token=", "--ServerApp.password=",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.user_settings_dir={base / 'settings'}",
            f"--LabApp.workspaces_dir={base / 'workspaces'}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("jupyter lab did not start:\n" + (base / "lab.log").read_text()[-3000:])
            time.sleep(0.3)
    try:
        yield Lab(url, root, env, extension, base / "settings")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    """Per module, not per session: Playwright's sync API holds an asyncio loop running in the
    main thread while it lives, and every later test that calls `asyncio.run` (the async API
    tests) would fail with "cannot be called from a running event loop"."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.page_errors = errors  # type: ignore[attr-defined]
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
