"""``ooniutils cache purge`` on folders laid out like nginx's proxy_cache_path (the end-to-end
run against a real nginx is in tests/deploy/test_nginx.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from ooniutils.cli import cli
from ooniutils.edge import check_nginx_cache_dir, purge_nginx_cache
from ooniutils.exceptions import ConfigError


def _cache_file(root: Path, key: str, body: bytes = b"{}") -> Path:
    """Write an entry the way nginx 1.22 lays it out (levels=1:2): a binary header of 0x150
    bytes (version 5 first), then ``\\nKEY: <key>\\n``, then the HTTP header and body."""
    name = hashlib.md5(key.encode()).hexdigest()
    path = root / name[-1] / name[-3:-1] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (5).to_bytes(8, "little") + bytes(0x150 - 8)
    path.write_bytes(header + f"\nKEY: {key}\n".encode()
                     + b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body)
    return path


@pytest.fixture
def cache(tmp_path) -> Path:
    root = tmp_path / "ooni-api"
    root.mkdir()
    for i in range(5):
        _cache_file(root, f"httpapi.example.org/api/v1/x?i={i}")
    return root


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_purge_with_yes(cache):
    temp = cache / "0000000042"  # an entry nginx is writing right now
    temp.write_bytes(b"partial")
    res = CliRunner().invoke(cli, ["cache", "purge", "--cache-dir", str(cache), "--yes"])
    assert res.exit_code == 0, res.output
    assert "meant for test hosts" in res.output
    assert "removed 5 cached entries" in res.output and str(cache) in res.output
    assert _files(cache) == [temp]
    assert cache.is_dir() and not [p for p in cache.iterdir() if p.is_dir()]


def test_purge_uses_the_setting_and_asks_first(cache, monkeypatch):
    monkeypatch.setenv("OONI_NGINX_CACHE_DIR", str(cache))
    res = CliRunner().invoke(cli, ["cache", "purge"], input="n\n")
    assert res.exit_code == 1 and "Aborted" in res.output
    assert "Delete the 5 cached entries" in res.output
    assert len(_files(cache)) == 5
    res = CliRunner().invoke(cli, ["cache", "purge"], input="y\n")
    assert res.exit_code == 0, res.output
    assert _files(cache) == []


def test_purge_of_an_empty_cache(tmp_path):
    res = CliRunner().invoke(cli, ["cache", "purge", "--cache-dir", str(tmp_path), "-y"])
    assert res.exit_code == 0 and "removed 0 cached entries" in res.output


@pytest.mark.parametrize("path, words", [
    ("/", "system folder"),
    ("/etc", "system folder"),
    ("relative/dir", "absolute"),
    ("/nonexistent-ooni-cache-dir", "does not exist"),
])
def test_refuses_bad_paths(path, words):
    res = CliRunner().invoke(cli, ["cache", "purge", "--cache-dir", path, "--yes"])
    assert res.exit_code == 1
    assert words in res.output and "Error" in res.output


def test_refuses_a_folder_with_foreign_files(cache):
    foreign = cache / "notes.txt"
    foreign.write_text("mine")
    res = CliRunner().invoke(cli, ["cache", "purge", "--cache-dir", str(cache), "--yes"])
    assert res.exit_code == 1 and str(foreign) in res.output and "not an nginx cache file" in res.output
    assert len(_files(cache)) == 6  # nothing deleted


def test_refuses_hex_named_file_without_nginx_header(cache):
    fake = cache / "a" / "bc" / ("0" * 29 + "bca")
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_bytes(b"just some data named like a cache entry")
    with pytest.raises(ConfigError, match="KEY") as exc:
        check_nginx_cache_dir(cache)
    assert str(fake) in str(exc.value) and exc.value.setting == "OONI_NGINX_CACHE_DIR"


def test_refuses_foreign_folders_and_symlinks(cache, tmp_path):
    (cache / "photos").mkdir()
    with pytest.raises(ConfigError, match="photos.*level folder"):
        purge_nginx_cache(cache)
    (cache / "photos").rmdir()
    (cache / "ab").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(ConfigError, match="level folder"):
        purge_nginx_cache(cache)
    (cache / "ab").unlink()
    link = tmp_path / "link"
    link.symlink_to(cache, target_is_directory=True)
    with pytest.raises(ConfigError, match="symlink"):
        purge_nginx_cache(link)
    assert len(_files(cache)) == 5


def test_purge_result(cache):
    before = sum(p.stat().st_size for p in _files(cache))
    result = purge_nginx_cache(cache)
    assert (result.files, result.bytes, result.skipped_temp, result.errors) == (5, before, 0, [])
