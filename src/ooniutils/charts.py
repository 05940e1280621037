"""Charts for notebooks (Altair, rendered as static SVG — see :mod:`ooniutils.display`).

* :func:`easy_msm_count_chart` — measurement counts over time, stacked by one column.
* :func:`stacked_counts_chart` — the same picture from a DataFrame you already have.
* :func:`flow_chart` — actual vs predicted hourly flow, the alarm band and the alarms.

Example::

    easy_msm_count_chart(since="2 weeks", dimension="probe_cc", filter_test_name="web_connectivity")
    chart, df = easy_msm_count_chart(dimension="software_name", granularity="hour",
                                     since="3 days", return_data=True)
"""

from __future__ import annotations

import logging
from typing import Any

import altair as alt
import pandas as pd

from .clickhouse import click_query_fsn
from .datasets.flow import GRANULARITY_SQL, filter_sql, time_range
from .exceptions import AnalysisError

log = logging.getLogger(__name__)

OTHER = "(other)"
EMPTY = "(empty)"

# fastpath columns worth stacking by (high-cardinality ones like input are capped by the limit)
DIMENSIONS = ("software_version", "software_name", "probe_cc", "probe_asn", "test_name", "platform",
              "engine_name", "engine_version", "architecture", "test_helper_address",
              "test_helper_type", "domain", "input", "blocking_type", "anomaly", "confirmed",
              "msm_failure", "test_version", "server_cc")

_FREQ = {"hour": "h", "day": "D", "week": "W-MON", "month": "MS"}


def _bucket_floor(ts: pd.Timestamp, granularity: str) -> pd.Timestamp:
    if granularity == "week":
        return (ts - pd.Timedelta(days=ts.day_of_week)).floor("D")
    if granularity == "month":
        return ts.floor("D").replace(day=1)
    return ts.floor(_FREQ[granularity])


def _complete(df: pd.DataFrame, t: str, key: str, n: str, start: pd.Timestamp, stop: pd.Timestamp,
              granularity: str) -> pd.DataFrame:
    """Zero-fill missing (bucket, band) pairs so stacked areas do not interpolate over gaps."""
    if df.empty:
        return df
    first = _bucket_floor(start, granularity)
    last = _bucket_floor(stop - pd.Timedelta(seconds=1), granularity)
    grid = pd.date_range(first, last, freq=_FREQ[granularity])
    if granularity == "week":
        grid = pd.date_range(first, last, freq="7D")
    bands = df[key].unique()
    full = pd.MultiIndex.from_product([grid, bands], names=[t, key])
    out = df.set_index([t, key])[n].reindex(full, fill_value=0).reset_index()
    return out


#: Longest legend label drawn, in pixels (Vega-Lite's default, 160, cut "ooniprobe-desktop").
LEGEND_LABEL_LIMIT = 400


def axis_title(column: str) -> str:
    """A column name as an axis or legend title: ``software_name`` → "software name"."""
    return column.replace("_", " ")


def stacked_counts_chart(df: pd.DataFrame, t: str = "t", key: str = "software_name", n: str = "n",
                         title: str = "", order: list[str] | None = None, height: int = 320,
                         width: int = 760, x_title: str = "time (UTC)",
                         subtitle: str | None = None) -> alt.Chart:
    """Stacked areas of ``n`` over ``t``, one band per ``key`` value (largest at the bottom,
    ``(other)`` on top). An empty ``df`` gives a chart saying "no data". ``x_title`` names
    the time axis (e.g. "day (UTC)"); ``subtitle`` goes under the title (e.g. a caveat)."""
    if df.empty:
        return (alt.Chart(pd.DataFrame({"text": [f"no data: {title}" if title else "no data"]}))
                .mark_text(size=14).encode(text="text:N").properties(title=title, height=60, width=width))
    if order is None:
        totals = df.groupby(key)[n].sum().sort_values(ascending=False)
        order = [k for k in totals.index if k != OTHER] + ([OTHER] if OTHER in totals.index else [])
    d = df.copy()
    d["_order"] = d[key].map({k: i for i, k in enumerate(order)})
    heading: Any = alt.TitleParams(title, subtitle=subtitle) if subtitle else title
    return (
        alt.Chart(d)
        .mark_area(interpolate="step-after", opacity=0.85)
        .encode(
            x=alt.X(f"{t}:T", title=x_title),
            y=alt.Y(f"sum({n}):Q", stack="zero", title="measurements"),
            color=alt.Color(f"{key}:N", sort=order, scale=alt.Scale(scheme="tableau20"),
                            title=axis_title(key),
                            legend=alt.Legend(labelLimit=LEGEND_LABEL_LIMIT)),
            order=alt.Order("_order:Q", sort="ascending"),
            tooltip=[alt.Tooltip(f"{t}:T"), alt.Tooltip(f"{key}:N"), alt.Tooltip(f"{n}:Q", format=",")],
        )
        .properties(title=heading, height=height, width=width)
    )


def easy_msm_count_chart(
    title: str | None = None,
    since: Any = "3 months",
    until: Any = None,
    granularity: str = "day",
    dimension: str = "software_version",
    dimension_limit: int = 6,
    filter_software_name: Any = None,
    filter_domain: Any = None,
    filter_engine_name: Any = None,
    filter_input: Any = None,
    filter_probe_asn: Any = None,
    filter_probe_cc: Any = None,
    filter_test_name: Any = None,
    return_data: bool = False,
) -> alt.Chart | tuple[alt.Chart, pd.DataFrame]:
    """Measurement counts over time as stacked bands of one ``dimension``.

    ``since``/``until``: "N day(s)/week(s)/month(s)/year(s)" ago, or a date/datetime string;
    ``until`` defaults to now; the range is [since, until) with ``since`` rounded down to the
    start of its bucket, so the first bucket is whole (a partial first bucket looked like a
    dip); a last bucket cut by ``until`` is named in the chart's subtitle. ``granularity``:
    hour, day, week or month. The ``dimension_limit`` largest values of ``dimension`` over the range get a
    band each; the rest are summed into an ``(other)`` band, so the stack's top is always
    the total. Each ``filter_*`` is a value or a list of values (bound as query parameters).

    Returns the chart, or ``(chart, df)`` with ``return_data=True`` (df columns: t,
    <dimension>, n, zero-filled). Bad arguments raise :class:`AnalysisError` listing what
    is allowed.
    """
    if dimension not in DIMENSIONS:
        raise AnalysisError(f"unknown dimension {dimension!r}; allowed: {', '.join(DIMENSIONS)}")
    if granularity not in GRANULARITY_SQL:
        raise AnalysisError(f"granularity must be one of {', '.join(GRANULARITY_SQL)}; got {granularity!r}")
    if isinstance(dimension_limit, bool) or not isinstance(dimension_limit, int) or dimension_limit < 1:
        raise AnalysisError(f"dimension_limit must be a positive integer, got {dimension_limit!r}")
    start, stop = time_range(since, until)
    start = _bucket_floor(start, granularity)   # a whole first bucket
    filters = {"software_name": filter_software_name, "domain": filter_domain,
               "engine_name": filter_engine_name, "input": filter_input, "probe_asn": filter_probe_asn,
               "probe_cc": filter_probe_cc, "test_name": filter_test_name}
    where, params = filter_sql(filters)
    cond = f"measurement_start_time >= %(since)s AND measurement_start_time < %(until)s{where}"
    label = f"if(toString({dimension}) = '', '{EMPTY}', toString({dimension}))"
    sql = (
        f"SELECT {GRANULARITY_SQL[granularity]} AS t, "
        f"if({label} IN (SELECT {label} FROM fastpath WHERE {cond} GROUP BY 1 "
        f"ORDER BY count() DESC, 1 LIMIT {int(dimension_limit)}), {label}, '{OTHER}') AS band, "
        f"count() AS n FROM fastpath WHERE {cond} GROUP BY t, band ORDER BY t, band"
    )
    df = click_query_fsn(sql, since=start.to_pydatetime(), until=stop.to_pydatetime(), **params)
    df = df.rename(columns={"band": dimension})
    if not df.empty:
        df["t"] = pd.to_datetime(df["t"])
        if df["t"].dt.tz is not None:
            df["t"] = df["t"].dt.tz_convert("UTC").dt.tz_localize(None)
        df["n"] = df["n"].astype("int64")
        df = _complete(df, "t", dimension, "n", start, stop, granularity)
    else:
        df = pd.DataFrame({"t": pd.Series(dtype="datetime64[ns]"), dimension: pd.Series(dtype=object),
                           "n": pd.Series(dtype="int64")})
    if title is None:
        shown = ", ".join(f"{k}={v}" for k, v in filters.items() if v is not None)
        title = f"Measurements per {granularity} by {dimension}" + (f" ({shown})" if shown else "")
    log.debug("easy_msm_count_chart: %d rows for %s", len(df), title)
    partial = None
    if _bucket_floor(stop, granularity) != stop:
        partial = (f"the last {granularity} is incomplete: measurements up to "
                   f"{stop:%Y-%m-%d %H:%M} UTC")
    chart = stacked_counts_chart(df, "t", dimension, "n", title=title,
                                 x_title=f"{granularity} (UTC)", subtitle=partial)
    return (chart, df) if return_data else chart


def flow_chart(pred: pd.DataFrame, alarms: pd.DataFrame | None = None, title: str = "",
               height: int = 220, width: int = 760) -> alt.LayerChart | alt.Chart:
    """Actual vs predicted hourly flow (from :func:`ooniutils.analyses.flow.predict`).

    Layers: the shaded band between the alarm line (threshold × expected) and the
    prediction, the prediction (dashed), the actual counts, and a red span per alarm.
    """
    if pred.empty:
        return (alt.Chart(pd.DataFrame({"text": [f"no data: {title}"]})).mark_text(size=14)
                .encode(text="text:N").properties(title=title, height=60, width=width))
    d = pred.reset_index()
    d = d.rename(columns={d.columns[0]: "hour"})
    x = alt.X("hour:T", title="hour (UTC)")
    base = alt.Chart(d).properties(title=title, height=height, width=width)
    band = base.mark_area(opacity=0.25, color="#f2a900").encode(
        x=x, y=alt.Y("lower:Q", title="measurements / hour"), y2="expected:Q")
    expected = base.mark_line(strokeDash=[4, 3], color="#555").encode(
        x=x, y="expected:Q", tooltip=["hour:T", alt.Tooltip("expected:Q", format=",.0f")])
    actual = base.mark_line(color="#1f77b4").encode(
        x=x, y="actual:Q", tooltip=["hour:T", alt.Tooltip("actual:Q", format=","),
                                    alt.Tooltip("expected:Q", format=",.0f"), alt.Tooltip("score:Q", format=".3f")])
    layers = [band, expected, actual]
    if alarms is not None and not alarms.empty:
        a = alarms[["start", "end", "severity"]].copy()
        layers.append(alt.Chart(a).mark_rect(color="red", opacity=0.3).encode(
            x="start:T", x2="end:T", tooltip=["start:T", "end:T", alt.Tooltip("severity:Q", format=".0%")]))
    # LayerChart directly rather than alt.layer(), which may return a FacetChart when the
    # layers share facet encodings; these have none.
    return alt.LayerChart(layer=layers)
