"""Loading URL prioritisation rules (OONI's ``url_priorities`` table) from a CSV file.

The file holds the complete rule set, one rule a row, with a header naming the columns
``category_code,cc,domain,url,priority`` (any order, other columns ignored); ``*`` (or an
empty field) matches anything. Loading makes the table's rules equal to the file's: rules
no longer in the file are cancelled with a ``sign = -1`` row and new ones added with
``sign = 1``, as OONI's rule editor does on its CollapsingMergeTree — so loading the same
file twice changes nothing, and the table's history is kept. A rule listed twice counts
twice (priorities add up).

The whole file is read and checked before anything is written: a malformed file (missing
column, a priority that is not a 32-bit integer, a country code that is neither ``*`` nor
two letters) raises :class:`LoadError` naming the file and line, and the table is unchanged.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..exceptions import LoadError
from .base import Store
from .schema import URL_PRIORITIES

log = logging.getLogger(__name__)

RULE_KEYS = ("category_code", "cc", "domain", "url", "priority")
Rule = tuple[str, str, str, str, int]
INT32 = (-(2**31), 2**31 - 1)


@dataclass
class RulesLoadResult:
    read: int
    added: int
    cancelled: int


def read_url_priorities(path: str | Path) -> list[Rule]:
    """The rules of a CSV file (see module doc); raises :class:`LoadError`."""
    path = Path(path)
    source = str(path)
    rules: list[Rule] = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [k for k in RULE_KEYS if k not in header]
            if missing:
                raise LoadError(f"the header lacks column(s) {', '.join(missing)} "
                                f"(needs {','.join(RULE_KEYS)}); found {','.join(header) or 'nothing'}", source, 1)
            reader.fieldnames = header
            for rec in reader:
                line = reader.line_num
                vals = {k: (rec.get(k) or "").strip() for k in RULE_KEYS}
                try:
                    prio = int(vals["priority"])
                except ValueError:
                    raise LoadError(f"priority must be an integer, got {vals['priority']!r}", source, line) from None
                if not INT32[0] <= prio <= INT32[1]:
                    raise LoadError(f"priority {prio} is out of the Int32 range", source, line)
                cc = vals["cc"].upper()
                if cc not in ("", "*") and not (len(cc) == 2 and cc.isalpha()):
                    raise LoadError(f"cc must be '*' or a two-letter country code, got {vals['cc']!r}", source, line)
                rules.append((vals["category_code"].upper(), cc, vals["domain"], vals["url"], prio))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LoadError(f"cannot read: {exc}", source) from exc
    return rules


def stored_rules(store: Store) -> Counter[Rule]:
    """The table's rules after collapsing signs (a rule may count more than once)."""
    df = store.query(
        "SELECT category_code, cc, domain, url, priority, sum(sign) AS copies FROM url_priorities "
        "GROUP BY category_code, cc, domain, url, priority")
    out: Counter[Rule] = Counter()
    for cat, cc, dom, url, prio, copies in df.itertuples(index=False):
        if int(copies) > 0:
            out[(str(cat), str(cc), str(dom), str(url), int(prio))] = int(copies)
    return out


def load_url_priorities(store: Store, path: str | Path) -> RulesLoadResult:
    """Make ``url_priorities`` hold exactly the rules of ``path`` (see module doc)."""
    wanted = Counter(read_url_priorities(path))
    with store.exclusive(URL_PRIORITIES.name):
        have = stored_rules(store)
        add = wanted - have
        cancel = have - wanted
        rows = [(1, *r) for r in add.elements()] + [(-1, *r) for r in cancel.elements()]
        if rows:
            df = pd.DataFrame(rows, columns=["sign", *RULE_KEYS])
            df["sign"] = df["sign"].astype("int8")
            df["priority"] = df["priority"].astype("int32")
            store.insert(URL_PRIORITIES.name, df)
    result = RulesLoadResult(sum(wanted.values()), sum(add.values()), sum(cancel.values()))
    log.info("url_priorities from %s: %d rule(s) read, %d added, %d cancelled",
             path, result.read, result.added, result.cancelled)
    return result
