"""Pure analyses over DataFrames: no queries, no alerts, no I/O.

* :mod:`.flow` — hourly incoming-measurement prediction and drop alarms
  (:class:`~.flow.FlowDetector`, :func:`~.flow.detect`, :func:`~.flow.detect_many`).
* :mod:`.trend` — slow declines over weeks (seasonal Mann-Kendall + Theil-Sen,
  :func:`~.trend.detect_decline`).
* :mod:`.test_helpers`, :mod:`.duplicates` — see their own docstrings.

Fetch the input with :mod:`ooniutils.datasets`; chart it with :mod:`ooniutils.charts`.
"""
