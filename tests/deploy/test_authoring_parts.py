"""The editor's parts without a browser: the kernel environment, the Jupyter command line, the
authorship record, the save hook, /auth/check, the notebook page's author line and the nginx
site renderer. (End to end through Chromium and nginx: test_authoring.py.)"""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from jupycron.authoring import JUPYTER_CONFIG_DIR, editor_env, server_argv
from jupycron.authoring_jupyter import ProxyUserIdentityProvider, record_author_hook
from jupycron.authors import authors_file, load_authors, record_save
from jupycron.config import Settings
from jupycron.exceptions import ConfigError
from jupycron.kernels.env import kernel_env
from jupycron.nginx_site import (
    ACME_TEMPLATE,
    SITE_TEMPLATE,
    render_acme_location,
    render_notebooks_site,
)
from jupycron.web.app import create_app
from jupycron.web.auth import hash_password
from tests.support.services import REPO


def _settings(tmp_path: Path, **kw: object) -> Settings:
    (tmp_path / "nb").mkdir(exist_ok=True)
    return Settings(notebooks=tmp_path / "nb", output=tmp_path / "out", **kw)  # type: ignore[arg-type]


# --- the kernel environment and the command line --------------------------------------------

def test_editor_kernels_get_the_run_environment_without_the_run_markers(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORUN", "1")
    monkeypatch.setenv("JUPYCRON_RUN_ID", "leftover")
    monkeypatch.setenv("OONI_DATA_DIR", "/srv/ooni-data")
    monkeypatch.setenv("OONI_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    s = _settings(tmp_path)
    env = editor_env(s)
    assert "AUTORUN" not in env and "JUPYCRON_RUN_ID" not in env
    assert "JUPYCRON_NOTEBOOK" not in env
    run = kernel_env("r1", "a_autorun.ipynb", s.output_dir)
    # everything a scheduled run's kernel gets (data source, alert channels, state folder)
    for key in ("OONI_DATA_DIR", "OONI_SLACK_WEBHOOK_URL", "JUPYCRON_STATE_DIR"):
        assert env[key] == run[key]
    assert env["JUPYTER_CONFIG_PATH"].split(":")[0] == str(JUPYTER_CONFIG_DIR)


def test_the_lab_config_disables_the_plugins_that_go_online():
    page = json.loads((JUPYTER_CONFIG_DIR / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"]["@jupyterlab/apputils-extension:announcements"] is True
    assert page["disabledExtensions"]["@jupyterlab/extensionmanager-extension"] is True


def test_server_argv_is_local_tokenless_and_offline(tmp_path):
    s = _settings(tmp_path, kernel_name="ooni")
    argv = server_argv(s, port=8899)
    assert argv[1:3] == ["-m", "notebook"]
    assert "--ServerApp.ip=127.0.0.1" in argv and "--ServerApp.port=8899" in argv
    assert f"--ServerApp.root_dir={s.notebooks}" in argv
    assert f"--AuthoringContentsManager.authors_dir={s.output_dir}" in argv
    assert "--EditorKernelManager.default_kernel_name=ooni" in argv
    assert "--LabApp.news_url=None" in argv and "--LabApp.extension_manager=readonly" in argv
    assert not any("allow_root" in a for a in argv)
    with pytest.raises(ConfigError, match="base URL"):
        server_argv(s, base_url="jupyter")


# --- the authorship record ------------------------------------------------------------------

def test_record_and_load(tmp_path):
    at = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    record_save(tmp_path, "ops/a_autorun.ipynb", "alice", now=at)
    record_save(tmp_path, "b_autorun.ipynb", "bob", now=at)
    record_save(tmp_path, "ops/a_autorun.ipynb", "carol", now=at)
    got = load_authors(tmp_path)
    assert {k: v.user for k, v in got.items()} == {"ops/a_autorun.ipynb": "carol",
                                                   "b_autorun.ipynb": "bob"}
    assert got["b_autorun.ipynb"].saved_at == at
    for bad in ("/etc/x.ipynb", "../x.ipynb", ""):
        with pytest.raises(ValueError):
            record_save(tmp_path, bad, "alice")


def test_concurrent_saves_all_land(tmp_path):
    names = [f"n{i}_autorun.ipynb" for i in range(16)]
    threads = [threading.Thread(target=record_save, args=(tmp_path, n, f"u{i}"))
               for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(load_authors(tmp_path)) == sorted(names)


def test_a_corrupt_record_is_moved_aside_and_restarted(tmp_path):
    authors_file(tmp_path).write_text("{not json")
    assert load_authors(tmp_path) == {}
    record_save(tmp_path, "a_autorun.ipynb", "alice")
    assert load_authors(tmp_path)["a_autorun.ipynb"].user == "alice"
    assert len(list(tmp_path.glob(".authors.json.corrupt-*"))) == 1


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8})?_autorun\.ipynb", fullmatch=True),
                       st.from_regex(r"[A-Za-z0-9_.@-]{1,20}", fullmatch=True), max_size=6))
def test_the_last_save_of_each_notebook_wins(tmp_path_factory, saves):
    folder = tmp_path_factory.mktemp("authors")
    for rel, user in saves.items():
        record_save(folder, rel, "someone-else")
        record_save(folder, rel, user)
    assert {k: v.user for k, v in load_authors(folder).items()} == saves


# --- the save hook and the identity the proxy vouches for -----------------------------------

def _handler(headers: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(request=SimpleNamespace(headers=headers, path="/jupyter/api/x"))


def test_identity_comes_from_the_proxy_header_and_reaches_the_save_hook(tmp_path):
    idp = ProxyUserIdentityProvider()
    nb = tmp_path / "nb" / "ops" / "a_autorun.ipynb"
    nb.parent.mkdir(parents=True)
    nb.write_text("{}")
    cm = SimpleNamespace(root_dir=str(tmp_path / "nb"), authors_dir=str(tmp_path / "out"))

    assert idp.get_user(_handler({})) is None
    assert idp.get_user(_handler({"X-Jupycron-User": "bad name;"})) is None
    record_author_hook(model={"type": "notebook"}, os_path=str(nb), contents_manager=cm)
    assert load_authors(tmp_path / "out") == {}  # no user: nothing pinned on anyone

    user = idp.get_user(_handler({"X-Jupycron-User": "alice"}))
    assert user is not None and user.username == "alice"
    record_author_hook(model={"type": "file"}, os_path=str(nb), contents_manager=cm)
    assert load_authors(tmp_path / "out") == {}  # only notebooks
    record_author_hook(model={"type": "notebook"}, os_path=str(nb), contents_manager=cm)
    assert load_authors(tmp_path / "out")["ops/a_autorun.ipynb"].user == "alice"


# --- the dashboard: /auth/check and the author line -----------------------------------------

NOTEBOOK = {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                       "source": ["# jupycron: {\"every\": \"1 hour\"}\n", "x = 1"]}],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def dashboard(tmp_path) -> TestClient:
    s = _settings(tmp_path, web_users={"alice": hash_password("pw")}, web_anonymous_read=True)
    (s.notebooks / "a_autorun.ipynb").write_text(json.dumps(NOTEBOOK))
    return TestClient(create_app(s))


def test_auth_check_names_the_user_and_refuses_everyone_else(dashboard):
    ok = dashboard.get("/auth/check", auth=("alice", "pw"))
    assert ok.status_code == 200 and ok.headers["x-jupycron-user"] == "alice"
    bad = dashboard.get("/auth/check", auth=("alice", "nope"))
    assert bad.status_code == 401 and bad.headers["www-authenticate"].startswith("Basic")
    # anonymous readers may read the dashboard, not edit
    assert dashboard.get("/").status_code == 200
    anon = dashboard.get("/auth/check")
    assert anon.status_code == 401 and "x-jupycron-user" not in anon.headers


def test_the_notebook_page_names_who_saved_it_last(dashboard, tmp_path):
    page = dashboard.get("/notebook/a_autorun.ipynb", auth=("alice", "pw"))
    assert page.status_code == 200
    assert re.search(r'class="last-saved">—<', page.text)
    record_save(tmp_path / "out", "a_autorun.ipynb", "alice",
                now=datetime(2026, 12, 6, 9, 30, 5, tzinfo=UTC))
    page = dashboard.get("/notebook/a_autorun.ipynb", auth=("alice", "pw"))
    assert '<span class="author">alice</span>' in page.text
    assert "2026-12-06 09:30:05 UTC" in page.text


# --- the nginx site -------------------------------------------------------------------------

def test_site_renders_with_and_without_tls():
    plain = render_notebooks_site(server_name="m.example.org", dashboard="127.0.0.1:8080",
                                  editor="127.0.0.1:8888", challenge_dir="/var/lib/d/acme/")
    assert "ssl_certificate" not in plain and "return 301" not in plain
    assert "alias /var/lib/d/acme/;" in plain and "auth_request /_jupycron_auth;" in plain
    tls = render_notebooks_site(server_name="m.example.org", dashboard="127.0.0.1:8080",
                                editor="127.0.0.1:8888", challenge_dir="/var/lib/d/acme",
                                tls_cert="/etc/nginx/tls/m/fullchain.pem",
                                tls_key="/etc/nginx/tls/m/privkey.pem")
    assert "listen 443 ssl;" in tls and "return 301 https://$host$request_uri;" in tls
    # the challenge location sits in the plain-HTTP server, before the redirect
    assert tls.index("acme-challenge/ {") < tls.index("return 301")
    assert render_acme_location("/var/lib/d/acme").count("alias /var/lib/d/acme/;") == 1


@pytest.mark.parametrize("field", ["server_name", "dashboard", "editor", "challenge_dir"])
def test_site_refuses_values_that_inject_directives(field):
    values = {"server_name": "m.example.org", "dashboard": "127.0.0.1:8080",
              "editor": "127.0.0.1:8888", "challenge_dir": "/srv/acme"}
    values[field] = "x; include /etc/passwd"
    with pytest.raises(ConfigError, match=field):
        render_notebooks_site(**values)
    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        render_notebooks_site(**{**values, field: "ok"}, tls_cert="/c.pem")


def test_site_placeholders_are_documented():
    readme = (REPO / "deploy" / "nginx" / "README.md").read_text()
    text = SITE_TEMPLATE.read_text() + ACME_TEMPLATE.read_text()  # the site includes it
    names = set(re.findall(r"\{\{\s*(\w+)", text))
    names |= set(re.findall(r"\{%-?\s*(?:if|for \w+ in)\s+(\w+)", text))
    names -= {"addr"}
    assert names >= {"server_name", "dashboard", "editor", "challenge_dir", "tls_cert"}
    for name in names:
        assert f"`{name}`" in readme, f"placeholder {name} is not documented in README.md"


def test_editor_kernels_never_get_autorun_whatever_the_server_or_request_says(monkeypatch,
                                                                              tmp_path):
    import asyncio

    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    from jupycron.authoring_jupyter import EditorKernelManager

    seen: dict = {}

    async def fake_start(self, **kwargs):
        seen.update(kwargs)
        return "k1"

    monkeypatch.setattr(AsyncMappingKernelManager, "start_kernel", fake_start)
    monkeypatch.setenv("AUTORUN", "1")
    monkeypatch.setenv("OONI_DATA_DIR", "/srv/data")
    km = EditorKernelManager(root_dir=str(tmp_path))
    got = asyncio.run(km.start_kernel(path="ops/x.ipynb",
                                      env={"AUTORUN": "1", "JUPYCRON_RUN_ID": "r", "A": "b"}))
    assert got == "k1"
    assert "AUTORUN" not in seen["env"] and "JUPYCRON_RUN_ID" not in seen["env"]
    assert seen["env"]["OONI_DATA_DIR"] == "/srv/data" and seen["env"]["A"] == "b"
    assert km.cwd_for_path("ops/x.ipynb") == str(tmp_path)
