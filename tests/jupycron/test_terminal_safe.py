"""`jupycron list` shows a finding's summary through terminal_safe: no ESC sequences and,
since this test, no bidirectional overrides (before: "a\\u202e evil" printed raw, so a
summary could display reversed text in the operator's terminal)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jupycron.formatting import terminal_safe

_BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@given(st.text())
def test_no_control_or_bidi_character_reaches_the_terminal(text):
    out = terminal_safe(text)
    assert len(out) == len(text)
    for ch in out:
        assert ch in "\t\n" or not (ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f or ch in _BIDI)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf"))))
def test_printable_text_is_unchanged(text):
    assert terminal_safe(text) == text
