"""Redacting a short URL secret (an ntfy topic ``t``) keeps the error text readable.

Before: with ``ntfy_url = "http://host/t"`` the alert check logged "ReadTimeou***: ***imed
ou***": every letter ``t`` of the reason was taken for the secret.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ooniutils.alerts import http

_ALNUM = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789", min_size=1, max_size=5)
_LETTERS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=5)


@given(secret=_LETTERS, before=_ALNUM, after=_ALNUM)
def test_a_short_secret_inside_a_word_is_left_alone_and_alone_is_redacted(secret, before, after):
    url = f"http://127.0.0.1:8080/{secret}"
    secrets = http.url_secrets(url)
    word = f"{before}{secret}{after}"
    assert http.redact(f"({word}: {word})", secrets) == f"({word}: {word})"
    assert http.redact(f"POST {url} failed", secrets) == "POST http://127.0.0.1:8080/*** failed"
    assert http.redact(f"{secret}: ({secret})/{secret}", secrets) == "***: (***)/***"


def test_the_timeout_reason_with_topic_t_is_readable():
    secrets = http.url_secrets("http://127.0.0.1:1/t")
    assert http.redact("no answer (ReadTimeout: timed out) from /t", secrets) == \
        "no answer (ReadTimeout: timed out) from /***"


@given(secret=st.text(min_size=http.SHORT_SECRET, max_size=30).filter(lambda s: s.strip("/")))
def test_a_long_secret_is_redacted_wherever_it_appears(secret):
    text = f"x{secret}y {secret}"
    assert secret not in http.redact(text, [secret])
