"""Named queries that fetch the tables analyses and charts need (through
:func:`ooniutils.clickhouse.click_query_fsn`, parameters always bound).

* :mod:`.flow` — measurement counts per hour/day and probe type or country.
* :mod:`.source` — :func:`~.source.require_rows`: no rows at all is an error naming the data
  source, never "nothing to check".
"""
