"""Named queries that fetch the tables analyses and charts need (through
:func:`ooniutils.clickhouse.click_query_fsn`, parameters always bound).

* :mod:`.flow` — measurement counts per hour/day and probe type or country.
"""
