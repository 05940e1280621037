"""Queries behind the campaign investigation notebook: daily measurements per country,
network and URL, restricted to the campaign's URLs, categories and probe types."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..analyses.campaign import CampaignWindow
from ..clickhouse import click_query_fsn
from ..exceptions import AnalysisError
from .priorities import CC_SQL, _countries


def _list(value: str | Sequence[str] | None, name: str) -> list[str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else [str(v) for v in value]
    values = [v.strip() for v in values if v.strip()]
    if not values:
        raise AnalysisError(f"{name} is an empty list: pass None for no restriction")
    return values


def campaign_target_urls(countries: str | Sequence[str], urls: Sequence[str] | None = None,
                         categories: Sequence[str] | None = None) -> list[str]:
    """The campaign's URLs: ``urls`` when given, else the test-list URLs (the countries'
    lists and the global one) in ``categories``, else [] (every URL measured counts)."""
    explicit = _list(urls, "urls")
    if explicit is not None:
        return sorted(set(explicit))
    cats = _list(categories, "categories")
    if cats is None:
        return []
    df = click_query_fsn(
        f"SELECT DISTINCT url FROM citizenlab WHERE ({CC_SQL} IN %(ccs)s OR {CC_SQL} = 'ZZ') "
        "AND category_code IN %(cats)s ORDER BY url",
        ccs=_countries(countries), cats=[c.upper() for c in cats])
    if df.empty:
        raise AnalysisError(f"no test-list URL in categories {', '.join(cats)} for these countries")
    return df["url"].tolist()


def fetch_campaign_counts(window: CampaignWindow, countries: str | Sequence[str],
                          target_urls: Sequence[str] = (), probe_types: Sequence[str] | None = None,
                          test_name: str = "web_connectivity") -> pd.DataFrame:
    """Daily measurements of ``test_name`` from the baseline's start to the campaign's end:
    columns day, probe_cc, probe_asn, input, n. ``target_urls`` (non-empty) restricts the
    inputs; ``probe_types`` the ``software_name`` (e.g. ``["ooniprobe-android"]``)."""
    where = ["measurement_start_time >= %(since)s", "measurement_start_time < %(until)s",
             "test_name = %(test)s", "probe_cc IN %(ccs)s"]
    params: dict[str, Any] = {"since": window.baseline_start.to_pydatetime(),
                              "until": window.end.to_pydatetime(), "test": test_name,
                              "ccs": _countries(countries)}
    if target_urls:
        where.append("input IN %(urls)s")
        params["urls"] = list(target_urls)
    types = _list(probe_types, "probe_types")
    if types is not None:
        where.append("software_name IN %(types)s")
        params["types"] = types
    df = click_query_fsn(
        "SELECT toDate(measurement_start_time) AS day, probe_cc, probe_asn, input, count() AS n "
        f"FROM fastpath WHERE {' AND '.join(where)} "
        "GROUP BY day, probe_cc, probe_asn, input ORDER BY day, probe_cc, probe_asn, input", **params)
    df["n"] = df["n"].astype("int64")
    df["day"] = pd.to_datetime(df["day"])
    return df
