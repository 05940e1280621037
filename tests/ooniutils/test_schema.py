"""schema.py against OONI's production DDL facts, and parts written under the old schema."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ooniutils.store.schema import (
    CITIZENLAB,
    EVENT_DETECTOR_CHANGEPOINTS,
    FASTPATH,
    TEST_GROUPS,
    Table,
)


def test_fastpath_matches_ooni_production_types():
    types = dict(FASTPATH.columns)
    assert types["probe_cc"] == types["test_name"] == types["engine_name"] == "LowCardinality(String)"
    assert types["probe_asn"] == "Int32"
    assert types["update_time"] == "DateTime64(3) MATERIALIZED now64()"
    assert types["is_verified"] == "LowCardinality(String)"
    assert FASTPATH.materialized == ("update_time",)
    names = FASTPATH.column_names
    assert names[names.index("test_version"):names.index("blocking_type")] == [
        "test_version", "architecture", "engine_name", "engine_version", "test_runtime"]  # OONI's order
    ddl = FASTPATH.ddl()
    assert "INDEX fastpath_rid_idx report_id TYPE minmax GRANULARITY 1" in ddl
    assert ddl.endswith("ORDER BY (measurement_start_time, report_id, input, measurement_uid)\n"
                        "SETTINGS index_granularity = 8192")
    assert CITIZENLAB.ddl().endswith("SETTINGS index_granularity = 4")


def test_changepoints_and_test_groups_ddl():
    ddl = EVENT_DETECTOR_CHANGEPOINTS.ddl()
    assert "`tls_blocked_current_state` String DEFAULT 'ok'" in ddl and "PARTITION BY toYYYYMM(ts)" in ddl
    tg = TEST_GROUPS.ddl()
    assert "ENGINE = Join(ANY, LEFT, test_name)" in tg and "ORDER BY" not in tg
    seed = TEST_GROUPS.seed_sql()
    assert seed is not None and "('web_connectivity', 'websites')" in seed and seed.count("(") == 24
    bad = Table("t", (("a", "String"), ("b", "String")), "Join(ANY, LEFT, a)", (), seed=(("x", "y'); DROP"),))
    with pytest.raises(ValueError, match="plain words"):
        bad.seed_sql()


def test_parts_written_before_new_columns_still_read(store):
    """A part from before is_verified / the Int32 probe_asn reads with the column's default."""
    old = pa.table({"measurement_uid": ["u-old"], "probe_cc": ["IT"],
                    "probe_asn": pa.array([3269], pa.uint32())})
    store.insert("fastpath", old.to_pandas())  # a fresh part, to create the folders' state
    (part,) = store.parts("fastpath")
    legacy = pq.read_table(part).drop_columns(["is_verified"]).set_column(
        4, "probe_asn", pa.array([3269], pa.uint32()))
    pq.write_table(legacy, part)
    got = store.query("SELECT measurement_uid, probe_asn, is_verified FROM fastpath")
    assert got.to_dict("records") == [{"measurement_uid": "u-old", "probe_asn": 3269, "is_verified": ""}]
