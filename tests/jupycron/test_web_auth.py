"""Dashboard authentication helpers and `jupycron passwd` (TOML rewrite)."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import anyio
import httpx
import pytest
from click.testing import CliRunner

from jupycron.cli_web import passwd_command
from jupycron.config import Settings, load_settings
from jupycron.exceptions import ConfigError
from jupycron.web import auth as auth_mod
from jupycron.web.auth import (
    Authenticator,
    dump_toml,
    hash_password,
    parse_basic,
    set_password,
    verify_password,
)
from jupycron.web.throttle import (
    FAILED_LOGIN_BURST,
    FAILED_LOGIN_REFILL_S,
    FailureThrottle,
    client_key,
)
from jupycron.web.users import UserTable
from tests.support.services import http_service


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


def _identify(auth: Authenticator, headers: dict[str, str], client: str = "10.0.0.1"):
    return anyio.run(auth.identify, headers, client)


def test_identify_order(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    set_password(cfg, "alice", "pw")
    users = load_settings(env={}, config_file=cfg).web_users
    auth = Authenticator(Settings(web_users=users))
    assert _identify(auth, basic("alice", "pw")).identity.user == "alice"
    assert _identify(auth, basic("alice", "nope")).identity is None
    assert _identify(auth, {}).identity is None
    anon = Authenticator(Settings(web_users=users, web_anonymous_read=True))
    ident = _identify(anon, {}).identity
    assert ident.user is None and not ident.can_write
    assert _identify(anon, basic("alice", "nope")).identity is None  # wrong is wrong, even so
    proxied = Authenticator(Settings(web_proxy_auth_header="X-User"))
    assert _identify(proxied, {"x-user": "carol"}).identity.via == "proxy"
    assert _identify(proxied, {"x-user": "  "}).identity is None


def test_failed_checks_use_up_a_token_bucket_per_client() -> None:
    now = [1000.0]
    t = FailureThrottle(burst=3, refill_s=10.0, clock=lambda: now[0])
    assert [t.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert t.take("a") == pytest.approx(10.0)
    assert t.take("b") == 0.0  # another client has its own bucket
    now[0] += 4.0
    assert t.take("a") == pytest.approx(6.0)
    t.give_back("a")  # a check that succeeded costs nothing
    assert t.take("a") == 0.0
    now[0] += 20.0
    assert t.take("a") == 0.0 and t.take("a") == 0.0 and t.take("a") != 0.0
    assert FailureThrottle.retry_after_header(0.2) == "1"
    assert FailureThrottle.retry_after_header(5.01) == "6"


def test_clients_are_told_apart_by_address_and_ipv6_network() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("testclient") == "testclient"


def test_throttled_client_is_refused_without_argon2(tmp_path: Path, monkeypatch) -> None:
    users = {"alice": hash_password("pw")}
    auth = Authenticator(Settings(web_users=users),
                         throttle=FailureThrottle(burst=2, refill_s=60, clock=lambda: 0.0))
    assert _identify(auth, basic("alice", "pw")).identity.user == "alice"  # cached from now on
    for _ in range(2):
        assert _identify(auth, basic("alice", "x")).identity is None
    calls = []
    monkeypatch.setattr(auth_mod, "verify_password", lambda *a: calls.append(a) or True)
    out = _identify(auth, basic("alice", "guess"))
    assert out.identity is None and out.retry_after == 60 and calls == []
    assert _identify(auth, basic("alice", "x"), client="10.0.0.2").identity is not None
    # a password proven before the attack still works from the throttled address
    assert _identify(auth, basic("alice", "pw")).identity.user == "alice"


def test_user_table_follows_the_config_file(tmp_path: Path, caplog) -> None:
    cfg = tmp_path / "c.toml"
    set_password(cfg, "alice", "one")
    table = UserTable(load_settings(env={}, config_file=cfg))
    first = table.current()["alice"]
    set_password(cfg, "alice", "two")
    set_password(cfg, "bob", "three")
    now = table.current()
    assert set(now) == {"alice", "bob"} and now["alice"] != first
    assert verify_password(now, "alice", "two")
    good = cfg.read_text()
    cfg.write_text(good + "\n[web_users.nested]\nx = 1\n")
    with pytest.raises(ConfigError, match="not strings"):
        table.current()
    cfg.write_text("web_users = {")
    with pytest.raises(ConfigError, match="cannot read config file"):
        table.current()
    assert "every login is refused" in caplog.text
    cfg.write_text(good)
    assert table.current() == now
    assert UserTable(Settings(web_users={"x": "h"})).current() == {"x": "h"}


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


# --- against `jupycron serve` running as its own process ------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`python -m jupycron serve` on a free port with a config file holding alice."""
    cfg = tmp_path / "jupycron.toml"
    set_password(cfg, "alice", "old pw")
    (tmp_path / "nb").mkdir()

    def command(port: int) -> list[str]:
        return [sys.executable, "-m", "jupycron", "--config", str(cfg), "serve",
                "--notebooks", str(tmp_path / "nb"), "--output", str(tmp_path / "out"),
                "--port", str(port), "--no-alerts"]

    with http_service("jupycron-serve", command, tmp_path, ready_path="/healthz") as url:
        yield url, cfg


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[httpx.Response, float]:
    r = httpx.get(url, auth=auth, timeout=60)
    return r, time.monotonic()


@pytest.mark.integration
def test_passwd_takes_effect_while_serving(served: tuple[str, Path]) -> None:
    url, cfg = served
    assert httpx.get(url + "/", auth=("alice", "old pw")).status_code == 200
    done = subprocess.run([sys.executable, "-m", "jupycron", "passwd", "alice", "--config", str(cfg),
                           "--password-stdin"], input=b"new pw\n", capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # the old password was just used (and cached): it must stop working at once all the same
    assert httpx.get(url + "/", auth=("alice", "old pw")).status_code == 401
    assert httpx.get(url + "/", auth=("alice", "new pw")).status_code == 200
    good = cfg.read_text()
    cfg.write_text(good + "[broken\n")  # a broken edit refuses everyone, visibly
    r = httpx.get(url + "/", auth=("alice", "new pw"))
    assert r.status_code == 503 and "cannot read config file" in r.text
    cfg.write_text(good)
    assert httpx.get(url + "/", auth=("alice", "new pw")).status_code == 200


@pytest.mark.integration
def test_guessing_passwords_neither_stalls_the_server_nor_goes_on(served: tuple[str, Path]) -> None:
    url, _ = served
    assert httpx.get(url + "/", auth=("alice", "old pw")).status_code == 200  # alice logged in
    n = FAILED_LOGIN_BURST + 6
    started = time.monotonic()
    with ThreadPoolExecutor(n + 1) as pool:
        guesses = [pool.submit(_get, url + "/", ("alice", f"guess {i}")) for i in range(n)]
        first = next(as_completed(guesses))
        first.result()
        # every check still pending queues behind this one if argon2 runs on the event loop
        health, health_done = pool.submit(_get, url + "/healthz").result()
        answers = [g.result() for g in guesses]
    assert health.status_code == 200
    codes = sorted(r.status_code for r, _ in answers)
    assert codes == [401] * FAILED_LOGIN_BURST + [429] * 6, codes
    last_check_done = max(t for r, t in answers if r.status_code == 401)
    assert health_done < last_check_done, "/healthz waited for the password checks"
    for r, _ in answers:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1 and "too many failed logins" in r.text
    # still refused afterwards (allowing for the tokens that came back meanwhile, one every
    # FAILED_LOGIN_REFILL_S: argon2 is slow on a loaded machine)
    back = int((time.monotonic() - started) // FAILED_LOGIN_REFILL_S)
    again = [httpx.get(url + "/", auth=("alice", f"again {i}")) for i in range(back + 1)]
    assert again[-1].status_code == 429 and int(again[-1].headers["retry-after"]) >= 1, \
        [r.status_code for r in again]
    # alice's proven password still works from this address
    assert httpx.get(url + "/", auth=("alice", "old pw")).status_code == 200
