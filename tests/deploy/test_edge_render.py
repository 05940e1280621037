"""``ooniutils edge render nginx|haproxy``: one option per template placeholder, the same text
as the library renderer, and — from a wheel installed in a fresh venv (not the source tree) —
configs the real ``nginx -t`` and ``haproxy -c`` accept."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ooniutils.cli import cli
from ooniutils.edge import (
    HAPROXY_TEMPLATE,
    NGINX_TEMPLATE,
    Backend,
    render_haproxy_config,
    render_nginx_config,
)
from tests.deploy.conftest import nginx_main_conf
from tests.support.services import REPO, require_program

NGINX_ARGS = ["--upstream", "127.0.0.1:8000", "--server-name", "api.example.org",
              "--cache-dir", "/var/cache/nginx/ooni-api", "--outputs-dir", "/srv/out"]


def _placeholders(template: Path) -> set[str]:
    text = template.read_text()
    names = set(re.findall(r"\{\{\s*(\w+)", text))
    names |= set(re.findall(r"\{%-?\s*(?:if|for \w+ in)\s+(\w+)", text))
    return names - set(re.findall(r"\{%-?\s*for (\w+) in", text))


@pytest.mark.parametrize("kind, template, special", [
    ("nginx", NGINX_TEMPLATE, {}),
    ("haproxy", HAPROXY_TEMPLATE, {"servers": "--server", "stats_password": "--stats-password-file"}),
])
def test_every_placeholder_has_an_option(kind, template, special):
    help_text = CliRunner().invoke(cli, ["edge", "render", kind, "--help"],
                                   terminal_width=200).output
    names = _placeholders(template)
    assert names, template
    for name in names:
        option = special.get(name, "--" + name.replace("_", "-"))
        assert option in help_text, f"placeholder {name} of {template.name} has no option {option}"


def test_cli_prints_what_the_library_renders():
    res = CliRunner().invoke(cli, ["edge", "render", "nginx", *NGINX_ARGS, "--listen", "8080",
                                   "--real-ip-from", "10.0.0.0/8", "--real-ip-from", "::1",
                                   "--cache-valid", "1m"])
    assert res.exit_code == 0, res.output
    assert res.output == render_nginx_config(
        upstream="127.0.0.1:8000", server_name="api.example.org",
        cache_dir="/var/cache/nginx/ooni-api", outputs_dir="/srv/out", listen=["8080"],
        real_ip_from=["10.0.0.0/8", "::1"], cache_valid="1m")
    default = CliRunner().invoke(cli, ["edge", "render", "nginx", *NGINX_ARGS]).output
    assert "listen 80;" in default and "listen [::]:80;" in default


def test_haproxy_password_from_file_or_environment_never_argv(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    args = ["edge", "render", "haproxy", "--bind", "0.0.0.0:80", "--server", "th1=10.0.0.1:8080",
            "--server", "th2=10.0.0.2:8080", "--stats-bind", "127.0.0.1:8404", "--stats-user", "ops"]
    expected = render_haproxy_config(
        bind="0.0.0.0:80", servers=[Backend("th1", "10.0.0.1:8080"), Backend("th2", "10.0.0.2:8080")],
        stats_bind="127.0.0.1:8404", stats_user="ops", stats_password="s3cret")
    from_file = CliRunner().invoke(cli, [*args, "--stats-password-file", str(pw)])
    assert from_file.exit_code == 0 and from_file.output == expected
    from_env = CliRunner().invoke(cli, args, env={"OONI_HAPROXY_STATS_PASSWORD": "s3cret"})
    assert from_env.output == expected
    missing = CliRunner().invoke(cli, args, env={"OONI_HAPROXY_STATS_PASSWORD": ""})
    assert missing.exit_code == 2 and "--stats-password-file" in missing.output
    bad = CliRunner().invoke(cli, [*args[:6], "th1:10.0.0.1", *args[7:]],
                             env={"OONI_HAPROXY_STATS_PASSWORD": "x"})
    assert bad.exit_code == 2 and "NAME=HOST:PORT" in bad.output
    unprivileged = CliRunner().invoke(cli, [*args, "--run-as", "", "--chroot", ""],
                                      env={"OONI_HAPROXY_STATS_PASSWORD": "x"}).output
    assert "chroot" not in unprivileged.split("global", 1)[1].split("defaults", 1)[0]


def test_bad_value_names_the_placeholder():
    res = CliRunner().invoke(cli, ["edge", "render", "nginx", *NGINX_ARGS[:2], "--server-name",
                                   "x; include /etc/passwd", *NGINX_ARGS[4:]])
    assert res.exit_code == 1 and "server_name" in res.output and "include" not in res.output.split(":")[0]


# --- from an installed wheel ---------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A wheel of this checkout built offline (copied sources, no build isolation) and
    installed without dependencies into a fresh venv that borrows the project venv's
    third-party packages through a .pth file. Returns the venv's ``bin`` folder."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src-copy"  # never write build/ or *.egg-info into the checkout
    shutil.copytree(REPO / "src", src / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    dist = base / "dist"
    pip = [sys.executable, "-m", "pip"]
    build = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "-q", "-w", str(dist), str(src)], capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("ooni_monitoring-*.whl")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    site = next(venv.glob("lib/python3*/site-packages"))
    deps = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    (site / "_project_deps.pth").write_text(f"{deps}\n")  # a path only: no editable hook
    inst = subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                           "--no-index", "-q", str(wheel)], capture_output=True, text=True,
                          timeout=300)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    return venv / "bin"


def _run(bin_dir: Path, *args: str, env: dict[str, str] | None = None,
         cwd: Path | None = None, program: str = "ooniutils") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(bin_dir / program), *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, cwd=cwd, timeout=120)


def _assert_nginx_accepts(nginx: str, prefix: Path, site_text: str) -> None:
    """``nginx -t`` on ``site_text`` included in a minimal main config under ``prefix``."""
    site = prefix / "site.conf"
    site.write_text(site_text)
    main = prefix / "nginx.conf"
    main.write_text(nginx_main_conf(str(prefix), str(site)))
    checked = subprocess.run([nginx, "-t", "-p", str(prefix), "-c", str(main), "-g",
                              f"pid {prefix}/nginx.pid; error_log {prefix}/logs/error.log;"],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "test is successful" in checked.stderr, checked.stderr


@pytest.mark.integration
def test_installed_wheel_renders_configs_nginx_and_haproxy_accept(installed, tmp_path):
    where = subprocess.run([str(installed / "python"), "-c",
                            "import ooniutils.edge as e; print(e.NGINX_TEMPLATE)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60, check=True)
    template = Path(where.stdout.strip())
    assert template.is_file() and installed.parent in template.parents  # not the checkout

    nginx = require_program("nginx", "/usr/sbin/nginx", package="nginx")
    prefix = tmp_path / "nginx"
    for sub in ("cache", "outputs", "logs", "tmp"):
        (prefix / sub).mkdir(parents=True)
    res = _run(installed, "edge", "render", "nginx", "--upstream", "127.0.0.1:8000",
               "--server-name", "localhost", "--cache-dir", str(prefix / "cache"),
               "--outputs-dir", str(prefix / "outputs"), "--listen", "127.0.0.1:8081",
               "--access-log", str(prefix / "logs" / "access.log"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    _assert_nginx_accepts(nginx, prefix, res.stdout)

    haproxy = require_program("haproxy", "/usr/sbin/haproxy", package="haproxy")
    pw = tmp_path / "stats-password"
    pw.write_text("s3cret")
    res = _run(installed, "edge", "render", "haproxy", "--bind", "127.0.0.1:8082",
               "--server", "th1=127.0.0.1:9001", "--server", "th2=127.0.0.1:9002",
               "--stats-bind", "127.0.0.1:8404", "--stats-user", "ops",
               "--stats-password-file", str(pw), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(res.stdout)
    checked = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.integration
def test_installed_wheel_renders_the_notebooks_site_nginx_accepts(installed, tmp_path):
    """The dashboard + editor site (with its ACME location) from the installed package."""
    nginx = require_program("nginx", "/usr/sbin/nginx", package="nginx")
    prefix = tmp_path / "nginx"
    for sub in ("logs", "acme", "tmp"):
        (prefix / sub).mkdir(parents=True)
    res = _run(installed, "nginx-site", "--server-name", "localhost", "--listen", "127.0.0.1:8083",
               "--challenge-dir", str(prefix / "acme"), cwd=tmp_path, program="jupycron")
    assert res.returncode == 0, res.stderr
    assert "auth_request" in res.stdout and "/.well-known/acme-challenge/" in res.stdout
    _assert_nginx_accepts(nginx, prefix, res.stdout)
    bad = _run(installed, "nginx-site", "--server-name", "x; include /etc/passwd", cwd=tmp_path,
               program="jupycron")
    assert bad.returncode == 2 and "server_name" in bad.stderr
