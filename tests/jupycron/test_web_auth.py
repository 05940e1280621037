"""Dashboard authentication helpers and `jupycron passwd` (TOML rewrite)."""

from __future__ import annotations

import base64
import os
import stat
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from jupycron.cli_web import passwd_command
from jupycron.config import Settings, load_settings
from jupycron.exceptions import ConfigError
from jupycron.web.auth import (
    dump_toml,
    identify,
    parse_basic,
    set_password,
    verify_password,
)


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_parse_basic() -> None:
    assert parse_basic(basic("a", "p:w")["authorization"]) == ("a", "p:w")
    assert parse_basic("basic " + base64.b64encode(b"u:").decode()) == ("u", "")
    for bad in (None, "", "Bearer abc", "Basic", "Basic %%%", "Basic " + base64.b64encode(b"nocolon").decode(),
                "Basic " + base64.b64encode(b"\xff\xfe:x").decode()):
        assert parse_basic(bad) is None, bad


def test_set_password_creates_file_and_verifies(tmp_path: Path) -> None:
    cfg = tmp_path / "etc" / "jupycron.toml"
    assert set_password(cfg, "alice", "correct horse") is True
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    users = tomllib.loads(cfg.read_text())["web_users"]
    assert users["alice"].startswith("$argon2id$") and "correct horse" not in cfg.read_text()
    assert verify_password(users, "alice", "correct horse")
    assert not verify_password(users, "alice", "wrong")
    assert not verify_password(users, "bob", "correct horse")
    assert not verify_password({"alice": "not-a-hash"}, "alice", "x")


def test_set_password_keeps_other_keys_and_changes_hash(tmp_path: Path) -> None:
    cfg = tmp_path / "jupycron.toml"
    cfg.write_text('notebooks = "/srv/nb"\nconcurrency = 3\nlate_grace_s = 90.5\n'
                   'web_anonymous_read = true\nalert_channels = "slack,ntfy"\n'
                   'jupyter_base_url = "https://j.example/\\"q\\" \\\\ ü"\n\n'
                   '[web_users]\nbob = "$argon2id$old"\n')
    os.chmod(cfg, 0o640)
    assert set_password(cfg, "alice", "pw1") is True
    doc = tomllib.loads(cfg.read_text())
    assert doc["notebooks"] == "/srv/nb" and doc["concurrency"] == 3 and doc["late_grace_s"] == 90.5
    assert doc["web_anonymous_read"] is True and doc["alert_channels"] == "slack,ntfy"
    assert doc["jupyter_base_url"] == 'https://j.example/"q" \\ ü'
    assert doc["web_users"]["bob"] == "$argon2id$old"
    first = doc["web_users"]["alice"]
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o640
    assert set_password(cfg, "alice", "pw2") is False
    second = tomllib.loads(cfg.read_text())["web_users"]["alice"]
    assert second != first and verify_password({"alice": second}, "alice", "pw2")
    # the file is still a valid jupycron config
    s = load_settings(env={}, config_file=cfg)
    assert s.concurrency == 3 and set(s.web_users) == {"alice", "bob"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_set_password_rejects_bad_input(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    with pytest.raises(ConfigError, match="invalid user name"):
        set_password(cfg, "a:b", "pw")
    with pytest.raises(ConfigError, match="must not be empty"):
        set_password(cfg, "alice", "")
    cfg.write_text("web_users = 3\n")
    with pytest.raises(ConfigError, match="web_users must be a table"):
        set_password(cfg, "alice", "pw")
    cfg.write_text("not toml ===\n")
    with pytest.raises(ConfigError, match="cannot read config file"):
        set_password(cfg, "alice", "pw")
    assert cfg.read_text() == "not toml ===\n"


def test_dump_toml_refuses_what_it_cannot_write() -> None:
    assert tomllib.loads(dump_toml({"a-b": "x\ny\t\x01", "t": {"k.1": False}})) == \
        {"a-b": "x\ny\t\x01", "t": {"k.1": False}}
    with pytest.raises(ConfigError, match="cannot rewrite"):
        dump_toml({"a": [1, 2]})
    with pytest.raises(ConfigError, match="nested table"):
        dump_toml({"t": {"u": {"v": 1}}})


def test_identify_order(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    set_password(cfg, "alice", "pw")
    users = load_settings(env={}, config_file=cfg).web_users
    s = Settings(web_users=users)
    assert identify(s, basic("alice", "pw")).user == "alice"
    assert identify(s, basic("alice", "nope")) is None
    assert identify(s, {}) is None
    anon = Settings(web_users=users, web_anonymous_read=True)
    assert identify(anon, {}).user is None and not identify(anon, {}).can_write
    proxied = Settings(web_proxy_auth_header="X-User")
    assert identify(proxied, {"x-user": "carol"}).via == "proxy"
    assert identify(proxied, {"x-user": "  "}) is None


def test_passwd_command_stdin_and_prompt(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    runner = CliRunner()
    r = runner.invoke(passwd_command, ["alice", "--config", str(cfg), "--password-stdin"],
                      input="from stdin\n")
    assert r.exit_code == 0, r.output
    assert "added alice" in r.output
    users = tomllib.loads(cfg.read_text())["web_users"]
    assert verify_password(users, "alice", "from stdin")
    # prompted twice; a mismatch asks again
    r = runner.invoke(passwd_command, ["alice", "--config", str(cfg)],
                      input="one\ntwo\nnew pw\nnew pw\n")
    assert r.exit_code == 0, r.output
    assert "changed the password of alice" in r.output
    assert verify_password(tomllib.loads(cfg.read_text())["web_users"], "alice", "new pw")
    r = runner.invoke(passwd_command, ["alice"], input="x\nx\n", env={"JUPYCRON_CONFIG": ""})
    assert r.exit_code == 2 and "no config file" in r.output
    r = runner.invoke(passwd_command, ["bad:name", "--config", str(cfg), "--password-stdin"],
                      input="pw\n")
    assert r.exit_code == 2 and "invalid user name" in r.output
