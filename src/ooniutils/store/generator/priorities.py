"""The ``url_priorities`` rules of the generated world, shaped like OONI's own: a priority
per Citizen Lab category for every country (``cc = '*'``), a few country, domain and URL
rules on top, and one rule added then cancelled (a ``sign = -1`` row), as OONI's rule
editor leaves them. The rules are fixed (not seeded), like the test list.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CATEGORY_PRIORITIES: tuple[tuple[str, int], ...] = (
    ("ANON", 100), ("COMT", 100), ("FEXP", 100), ("HUMR", 100), ("LGBT", 100), ("NEWS", 100),
    ("POLR", 100), ("GRP", 80), ("MMED", 80), ("PUBH", 80), ("SRCH", 80), ("CULTR", 60),
    ("ENV", 60), ("GOVT", 60), ("HOST", 60), ("IGO", 60), ("REL", 60), ("FILE", 40),
    ("ALDR", 30), ("COMM", 30), ("DATE", 30), ("ECON", 30), ("GAME", 30), ("GMB", 30),
    ("HACK", 30), ("MILX", 30), ("PORN", 30), ("XED", 30),
)
"""Every-country priority of each category (OONI weights rights and news content highest)."""

EXTRA_RULES: tuple[tuple[str, str, str, str, int], ...] = (
    # (category_code, cc, domain, url, priority)
    ("NEWS", "RU", "*", "*", 50),            # more independent news where it is blocked
    ("ANON", "IR", "*", "*", 80),            # circumvention tools in Iran
    ("*", "*", "www.facebook.com", "*", -40),  # very well covered already
    ("*", "*", "www.google.com", "*", -60),
    ("*", "*", "*", "https://meduza.io/", 40),
    ("GRP", "BR", "*", "*", 20),
)

CANCELLED_RULE = ("GMB", "*", "*", "*", 500)
"""Added by mistake and cancelled: a +1 row and a -1 row that collapse to nothing."""


def url_priorities_frame() -> pd.DataFrame:
    rows = [(1, cat, "*", "*", "*", prio) for cat, prio in CATEGORY_PRIORITIES]
    rows += [(1, *r) for r in EXTRA_RULES]
    rows += [(1, *CANCELLED_RULE), (-1, *CANCELLED_RULE)]
    cols = list(zip(*rows, strict=True))
    return pd.DataFrame({
        "sign": np.array(cols[0], np.int8),
        **{name: pd.array(list(values), dtype="str")
           for name, values in zip(("category_code", "cc", "domain", "url"), cols[1:5], strict=True)},
        "priority": np.array(cols[5], np.int32),
    })
