"""An alert whose text holds lone surrogates still goes out (U+FFFD in their place).

Before: ``send_slack_msg``, ``send_alert_through_ntfy`` and ``alertmanager_fire_alert``
raised a bare ``UnicodeEncodeError`` (not even an ``AlertError``) for text decoded with
``surrogateescape`` (a journald line, a file name): the alert was never sent.
"""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from hypothesis import given
from hypothesis import strategies as st

from ooniutils.alerts import Alert, AlertmanagerTransport, NtfyTransport, SlackTransport
from ooniutils.alerts import alertmanager as am

_TEXT = st.text(alphabet=st.characters(), max_size=30)  # surrogates included
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _encoded(transport, alert) -> bytes:
    req = transport.payload(alert)
    built = httpx.Request(req.method, req.url, headers=dict(req.headers), json=req.json,
                          content=req.content)
    return built.read()


@given(title=_TEXT, text=_TEXT, label=_TEXT, tag=_TEXT)
def test_every_transport_encodes_any_text(title, text, label, tag):
    alert = Alert(title=title or "t", text=text, name="A" + label, labels={"cc": label},
                  annotations={"note": text}, tags=(tag or "x",))
    for transport in (SlackTransport("https://hooks.example/services/x"),
                      NtfyTransport("https://ntfy.example/topic")):
        body = _encoded(transport, alert)
        body.decode("utf-8")  # valid UTF-8 on the wire
    fired = am.firing_alert(title or "t", "A" + label, annotations={"note": text}, now=NOW)
    _encoded(AlertmanagerTransport("http://am.example:9093"), fired).decode("utf-8")


def test_a_surrogate_becomes_the_replacement_character():
    alert = Alert(title="IR \udcff down", text="a\ud800b", labels={"k\udc80": "v\udc81"})
    assert alert.title == "IR \ufffd down" and alert.text == "a\ufffdb"
    assert dict(alert.labels) == {"k\ufffd": "v\ufffd"}
