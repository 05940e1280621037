"""The [ooniutils] table's values are checked when jupycron loads it (README: "a bad key or
value stops jupycron at load"), and NaN is never a timeout.

Before: ``slack_webhook_url = "not a url"``, ``http_timeout = -1``, ``http_retries = 0`` or
a ClickHouse URL with port 99999 loaded fine and failed only at the first alert or query
(the run-state alerts of the scheduler then failed); ``OONI_HTTP_TIMEOUT=nan`` raised a bare
``ValueError`` from httpx instead of a ConfigError.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ooniutils import config
from ooniutils.exceptions import ConfigError
from ooniutils.jupycron_plugin import check_table

BASE = Path("/srv/jupycron")


@given(value=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10),
       key=st.sampled_from(["http_timeout", "clickhouse_timeout", "http_backoff"]))
def test_timeouts_and_backoff_must_be_finite_and_in_range(value, key):
    low_ok = value >= 0 if key == "http_backoff" else value > 0
    good = isinstance(value, int) and low_ok or (isinstance(value, float) and math.isfinite(value) and low_ok)
    if good:
        assert check_table({key: value}, BASE) == {key: str(value)}
    else:
        with pytest.raises(ValueError, match=rf"'{key}' must be a finite number"):
            check_table({key: value}, BASE)


@given(value=st.integers(-5, 5) | st.floats(0.1, 9.9) | st.text(max_size=4))
def test_retries_must_be_a_whole_number_of_at_least_one(value):
    text = str(value)
    if text.isdecimal() and int(text) >= 1:
        assert check_table({"http_retries": value}, BASE) == {"http_retries": text}
    elif text == "":
        assert check_table({"http_retries": value}, BASE) == {"http_retries": ""}
    else:
        with pytest.raises(ValueError, match="'http_retries' must be a whole number"):
            check_table({"http_retries": value}, BASE)


@pytest.mark.parametrize("key", ["alertmanager_url", "slack_webhook_url", "ntfy_url",
                                 "clickhouse_url", "logs_clickhouse_url"])
@pytest.mark.parametrize("url, good", [
    ("http://127.0.0.1:9093", True), ("https://u:hunter2@host/x?y=1", True), ("", True),
    ("not a url", False), ("ftp://host/x", False), ("http://", False),
    ("http://h:99999/db", False), ("http://u:hunter2@h:0/", False), ("host:8123", False),
])
def test_endpoints_must_be_http_urls_and_errors_never_show_them(key, url, good):
    if good:
        assert check_table({key: url}, BASE) == {key: url}
    else:
        with pytest.raises(ValueError, match=key) as err:
            check_table({key: url}, BASE)
        assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "NaN"])
def test_a_non_finite_number_in_the_environment_is_a_config_error(monkeypatch, raw):
    monkeypatch.setenv("OONI_HTTP_TIMEOUT", raw)
    with pytest.raises(ConfigError, match="OONI_HTTP_TIMEOUT must be a finite number"):
        config.get_float("OONI_HTTP_TIMEOUT")
