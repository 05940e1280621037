"""The tables of the measurement store, with OONI's real column names and ClickHouse types.

One declaration serves both back-ends: the embedded store derives its Parquet/chDB
structure from it, the server DDL in ``deploy/clickhouse/`` is generated from it
(``ooniutils data ddl``), and loaders use it to coerce input.

The tables follow OONI's production DDL column by column (ooni/devops' ClickHouse schema,
ooni/backend's migrations and ``docs/Database.md``); the differences kept, and why, are
listed in ``deploy/clickhouse/README.md``. A column type may carry ``MATERIALIZED expr``
(fastpath's ``update_time``): ClickHouse computes it on insert and leaves it out of
``SELECT *``; the embedded store does the same (:attr:`Table.materialized`). ``seed`` rows
are part of the table's definition (OONI's fixed ``test_groups`` lookup): every store
holds them once ``init`` ran.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    """(column name, ClickHouse type) in table order."""
    engine: str
    """ENGINE clause used on a ClickHouse server."""
    order_by: tuple[str, ...]
    time_column: str | None = None
    """Column that `ooniutils data info` reports the time range of."""
    indexes: tuple[str, ...] = ()
    """Server-side data-skipping indexes (``INDEX name expr TYPE ... GRANULARITY n``)."""
    settings: str | None = None
    """The server DDL's SETTINGS clause, e.g. ``index_granularity = 8192``."""
    seed: tuple[tuple[str, ...], ...] = ()
    """Rows every store holds (a fixed lookup table), in column order."""
    partition_by: str | None = None
    """The server DDL's PARTITION BY expression."""

    @property
    def column_names(self) -> list[str]:
        return [c for c, _ in self.columns]

    @property
    def materialized(self) -> tuple[str, ...]:
        """Columns declared ``MATERIALIZED``: filled on insert, not in ``SELECT *``."""
        return tuple(c for c, t in self.columns if _MATERIALIZED.search(t))

    def structure(self) -> str:
        """ClickHouse structure string, e.g. ``"a String, b UInt32"`` (for file()/table functions)."""
        return ", ".join(f"`{c}` {t}" for c, t in self.columns)

    def ddl(self, database: str = "default") -> str:
        cols = ",\n".join([*(f"    `{c}` {t}" for c, t in self.columns),
                           *(f"    INDEX {i}" for i in self.indexes)])
        order = f"\nPARTITION BY {self.partition_by}" if self.partition_by else ""
        order += f"\nORDER BY ({', '.join(self.order_by)})" if self.order_by else ""
        settings = f"\nSETTINGS {self.settings}" if self.settings else ""
        return (
            f"CREATE TABLE IF NOT EXISTS {database}.{self.name}\n(\n{cols}\n)\n"
            f"ENGINE = {self.engine}{order}{settings}"
        )

    def seed_sql(self, database: str = "default") -> str | None:
        """``INSERT`` of the :attr:`seed` rows (None without any). The values are plain
        identifiers, checked here, so no quoting question arises."""
        if not self.seed:
            return None
        for row in self.seed:
            if len(row) != len(self.columns) or not all(_PLAIN.fullmatch(v) for v in row):
                raise ValueError(f"seed row {row!r} of {self.name} is not {len(self.columns)} plain words")
        cols = ", ".join(self.column_names)
        values = ", ".join("(" + ", ".join(f"'{v}'" for v in row) + ")" for row in self.seed)
        return f"INSERT INTO {database}.{self.name} ({cols}) VALUES {values}"


_MATERIALIZED = re.compile(r"\sMATERIALIZED\s")
_PLAIN = re.compile(r"[A-Za-z0-9_]+")


FASTPATH = Table(
    "fastpath",
    (
        ("measurement_uid", "String"),
        ("report_id", "String"),
        ("input", "String"),
        ("probe_cc", "LowCardinality(String)"),
        ("probe_asn", "Int32"),
        ("test_name", "LowCardinality(String)"),
        ("test_start_time", "DateTime"),
        ("measurement_start_time", "DateTime"),
        ("filename", "String"),
        ("scores", "String"),
        ("platform", "String"),
        ("anomaly", "String"),
        ("confirmed", "String"),
        ("msm_failure", "String"),
        ("domain", "String"),
        ("software_name", "String"),
        ("software_version", "String"),
        ("control_failure", "String"),
        ("blocking_general", "Float32"),
        ("is_ssl_expected", "Int8"),
        ("page_len", "Int32"),
        ("page_len_ratio", "Float32"),
        ("server_cc", "String"),
        ("server_asn", "Int8"),
        ("server_as_name", "String"),
        ("update_time", "DateTime64(3) MATERIALIZED now64()"),
        ("test_version", "String"),
        ("architecture", "String"),
        ("engine_name", "LowCardinality(String)"),
        ("engine_version", "String"),
        ("test_runtime", "Float32"),
        ("blocking_type", "String"),
        ("test_helper_address", "LowCardinality(String)"),
        ("test_helper_type", "LowCardinality(String)"),
        ("ooni_run_link_id", "Nullable(UInt64)"),
        ("is_verified", "LowCardinality(String)"),
    ),
    engine="ReplacingMergeTree(update_time)",
    order_by=("measurement_start_time", "report_id", "input", "measurement_uid"),
    time_column="measurement_start_time",
    indexes=("fastpath_rid_idx report_id TYPE minmax GRANULARITY 1",
             "measurement_uid_idx measurement_uid TYPE minmax GRANULARITY 8"),
    settings="index_granularity = 8192",
)

CITIZENLAB = Table(
    "citizenlab",
    (
        ("domain", "String"),
        ("url", "String"),
        ("cc", "FixedString(32)"),
        ("category_code", "String"),
    ),
    engine="ReplacingMergeTree",
    order_by=("domain", "url", "cc", "category_code"),
    settings="index_granularity = 4",
)

# OONI's test name -> test group lookup (its API's test-coverage query joins it with
# ``ANY LEFT JOIN test_groups USING (test_name)``); the rows are OONI's.
TEST_GROUPS = Table(
    "test_groups",
    (
        ("test_name", "String"),
        ("test_group", "String"),
    ),
    engine="Join(ANY, LEFT, test_name)",
    order_by=(),
    seed=(
        ("bridge_reachability", "circumvention"), ("meek_fronted_requests_test", "circumvention"),
        ("psiphon", "circumvention"), ("riseupvpn", "circumvention"), ("tcp_connect", "circumvention"),
        ("tor", "circumvention"), ("torsf", "circumvention"), ("vanilla_tor", "circumvention"),
        ("dnscheck", "experimental"), ("urlgetter", "experimental"),
        ("facebook_messenger", "im"), ("signal", "im"), ("telegram", "im"), ("whatsapp", "im"),
        ("dns_consistency", "legacy"), ("http_host", "legacy"), ("http_requests", "legacy"),
        ("multi_protocol_traceroute", "legacy"),
        ("http_header_field_manipulation", "middlebox"), ("http_invalid_request_line", "middlebox"),
        ("dash", "performance"), ("ndt", "performance"),
        ("web_connectivity", "websites"),
    ),
)

TEST_HELPER_INSTANCES = Table(
    "test_helper_instances",
    (
        ("rdn", "String"),
        ("dns_zone", "String"),
        ("name", "String"),
        ("provider", "String"),
        ("region", "String"),
        ("ipaddr", "IPv4"),
        ("ipv6addr", "IPv6"),
        ("draining_at", "Nullable(DateTime('UTC'))"),
        ("sign", "Int8"),
        ("destroyed_at", "Nullable(DateTime('UTC'))"),
    ),
    engine="CollapsingMergeTree(sign)",
    order_by=("name",),
    settings="index_granularity = 8",
)

# journald fields as shipped by Vector into OONI's logs table (plus Vector's own
# host/message/timestamp), sorted by __REALTIME_TIMESTAMP (microseconds since the epoch).
LOGS = Table(
    "logs",
    (
        ("CODE_FILE", "Nullable(String)"),
        ("CODE_FUNC", "Nullable(String)"),
        ("CODE_LINE", "Nullable(String)"),
        ("INVOCATION_ID", "Nullable(String)"),
        ("LOGGER", "LowCardinality(Nullable(String))"),
        ("MESSAGE_ID", "Nullable(String)"),
        ("MESSAGE", "Nullable(String)"),
        ("PRIORITY", "Nullable(UInt8)"),
        ("PROCESS_NAME", "Nullable(String)"),
        ("SYSLOG_FACILITY", "LowCardinality(Nullable(String))"),
        ("SYSLOG_IDENTIFIER", "LowCardinality(Nullable(String))"),
        ("SYSLOG_PID", "Nullable(UInt64)"),
        ("SYSLOG_TIMESTAMP", "Nullable(String)"),
        ("THREAD_NAME", "Nullable(String)"),
        ("TID", "Nullable(UInt64)"),
        ("UNIT", "Nullable(String)"),
        ("_AUDIT_LOGINUID", "Nullable(UInt64)"),
        ("_AUDIT_SESSION", "Nullable(UInt64)"),
        ("_BOOT_ID", "Nullable(String)"),
        ("_CAP_EFFECTIVE", "Nullable(String)"),
        ("_CMDLINE", "Nullable(String)"),
        ("_COMM", "LowCardinality(Nullable(String))"),
        ("_EXE", "LowCardinality(Nullable(String))"),
        ("_GID", "LowCardinality(Nullable(UInt32))"),
        ("_HOSTNAME", "String"),
        ("_LINE_BREAK", "Nullable(String)"),
        ("_MACHINE_ID", "String"),
        ("_PID", "Nullable(UInt32)"),
        ("_SELINUX_CONTEXT", "Nullable(String)"),
        ("_SOURCE_REALTIME_TIMESTAMP", "Nullable(Int64)"),
        ("_STREAM_ID", "Nullable(String)"),
        ("_SYSTEMD_CGROUP", "Nullable(String)"),
        ("_SYSTEMD_INVOCATION_ID", "Nullable(String)"),
        ("_SYSTEMD_SLICE", "Nullable(String)"),
        ("_SYSTEMD_UNIT", "Nullable(String)"),
        ("_TRANSPORT", "LowCardinality(Nullable(String))"),
        ("_UID", "LowCardinality(Nullable(UInt32))"),
        ("__CURSOR", "Nullable(String)"),
        ("__MONOTONIC_TIMESTAMP", "Nullable(String)"),
        ("__REALTIME_TIMESTAMP", "Int64"),
        ("host", "String"),
        ("message", "Nullable(String)"),
        ("timestamp", "Nullable(String)"),
        ("inserted_at", "DateTime DEFAULT now()"),
    ),
    engine="MergeTree",
    order_by=("__REALTIME_TIMESTAMP",),
    time_column="inserted_at",
)

#: The event detector's per-signal columns (``<signal>_current_state``, ``_s_pos``, ``_s_neg``).
CHANGEPOINT_SIGNALS = ("dns_isp_blocked", "dns_other_blocked", "tcp_blocked", "tls_blocked")

EVENT_DETECTOR_CHANGEPOINTS = Table(
    "event_detector_changepoints",
    (
        ("probe_asn", "UInt32"),
        ("probe_cc", "String"),
        ("domain", "String"),
        ("ts", "DateTime64(3, 'UTC')"),
        ("count_isp_resolver", "Nullable(UInt32)"),
        ("count_other_resolver", "Nullable(UInt32)"),
        ("count", "Nullable(UInt32)"),
        ("dns_isp_blocked", "Nullable(Float32)"),
        ("dns_other_blocked", "Nullable(Float32)"),
        ("tcp_blocked", "Nullable(Float32)"),
        ("tls_blocked", "Nullable(Float32)"),
        *((f"{sig}_{part}", "String DEFAULT 'ok'" if part == "current_state" else "Nullable(Float32)")
          for sig in CHANGEPOINT_SIGNALS for part in ("current_state", "s_pos", "s_neg")),
        ("change_dir", "Nullable(Int8)"),
        ("current_state", "String DEFAULT 'ok'"),
        ("s_pos", "Nullable(Float32)"),
        ("s_neg", "Nullable(Float32)"),
        ("h", "Nullable(Float32)"),
        ("block_type", "String"),
    ),
    engine="MergeTree",
    partition_by="toYYYYMM(ts)",
    order_by=("probe_asn", "probe_cc", "ts", "domain"),
    time_column="ts",
    settings="index_granularity = 8192",
)

# OONI's URL prioritisation rules (its ``url_priorities`` table): a test-list URL's
# priority in a country is the sum of ``priority`` over the rules it matches, where ``*``
# (or '') in category_code, cc, domain or url matches anything. Rows are collapsed by
# ``sign`` (+1 adds a rule, -1 cancels it), as OONI's rule editor writes them.
URL_PRIORITIES = Table(
    "url_priorities",
    (
        ("sign", "Int8"),
        ("category_code", "String"),
        ("cc", "String"),
        ("domain", "String"),
        ("url", "String"),
        ("priority", "Int32"),
    ),
    engine="CollapsingMergeTree(sign)",
    order_by=("category_code", "cc", "domain", "url", "priority"),
)

TABLES: dict[str, Table] = {
    t.name: t for t in (FASTPATH, CITIZENLAB, TEST_GROUPS, TEST_HELPER_INSTANCES, LOGS,
                        EVENT_DETECTOR_CHANGEPOINTS, URL_PRIORITIES)
}


def get_table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        from ..exceptions import StoreError

        raise StoreError(f"unknown table {name!r}; known tables: {', '.join(sorted(TABLES))}") from None
