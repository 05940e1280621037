"""The static synthetic world: countries and their networks, probe software, tests,
software releases and test helpers.

Everything here is fixed (not seeded) so a ground-truth file stays readable across seeds:
the seed changes the random draws (counts, times, identifiers, outcomes) and the
placement of the short drops, never the world itself. Sizes are relative weights; the
generator scales them to the requested number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Country:
    cc: str
    utc_offset: float
    """Hours ahead of UTC (no DST): drives the local-time daily cycle."""
    weight: float
    mobile_bias: float
    """Multiplies the share of mobile probes (android, ios) in this country."""
    censorship: float
    """0..1: fraction of risky URLs blocked, and how much more often circumvention and
    messaging tests show anomalies."""
    block_method: str
    """fastpath ``blocking_type`` of this country's web_connectivity blocking."""
    asns: tuple[tuple[int, float], ...]
    """(ASN, share of the country's measurements)."""


COUNTRIES: tuple[Country, ...] = (
    Country("US", -5, 0.14, 0.8, 0.0, "", ((7922, .30), (7018, .20), (701, .15), (20115, .15), (22773, .10), (21928, .10))),
    Country("BR", -3, 0.08, 1.3, 0.02, "http-failure", ((28573, .35), (18881, .30), (26599, .20), (262907, .15))),
    Country("RU", 3, 0.08, 1.1, 0.15, "http-diff", ((12389, .35), (8359, .20), (31213, .15), (25513, .15), (16345, .15))),
    Country("IN", 5.5, 0.07, 1.4, 0.05, "http-diff", ((55836, .40), (45609, .30), (24560, .15), (9829, .15))),
    Country("IR", 3.5, 0.05, 1.3, 0.35, "http-diff", ((44244, .35), (197207, .30), (58224, .20), (16322, .15))),
    Country("DE", 1, 0.05, 0.7, 0.0, "", ((3320, .45), (3209, .30), (6805, .25))),
    Country("ID", 7, 0.05, 1.4, 0.10, "dns", ((7713, .40), (23693, .35), (24203, .25))),
    Country("CN", 8, 0.03, 0.9, 0.40, "tcp_ip", ((4134, .50), (4837, .30), (9808, .20))),
    Country("IT", 1, 0.03, 1.0, 0.02, "dns", ((3269, .45), (30722, .30), (1267, .25))),
    Country("TR", 3, 0.03, 1.2, 0.15, "dns", ((9121, .45), (16135, .35), (15897, .20))),
    Country("GB", 0, 0.03, 0.8, 0.02, "http-diff", ((2856, .40), (5089, .30), (5378, .30))),
    Country("FR", 1, 0.03, 0.8, 0.01, "dns", ((3215, .40), (15557, .30), (12322, .30))),
    Country("MM", 6.5, 0.02, 1.5, 0.25, "dns", ((9988, .50), (136255, .30), (133385, .20))),
    Country("EG", 2, 0.02, 1.3, 0.15, "tcp_ip", ((8452, .50), (36935, .30), (24863, .20))),
    Country("UA", 2, 0.02, 1.1, 0.08, "dns", ((15895, .40), (21497, .30), (25229, .30))),
    Country("TW", 8, 0.02, 1.0, 0.0, "", ((3462, .60), (18182, .40))),
    Country("MY", 8, 0.02, 1.2, 0.05, "dns", ((4788, .60), (9534, .40))),
    Country("NL", 1, 0.02, 0.7, 0.0, "", ((1136, .50), (33915, .50))),
    Country("MX", -6, 0.02, 1.2, 0.01, "dns", ((8151, .60), (22884, .40))),
    Country("CH", 1, 0.01, 0.7, 0.0, "", ((3303, .60), (6730, .40))),
    Country("AU", 10, 0.015, 0.9, 0.01, "dns", ((1221, .60), (4804, .40))),
    Country("JP", 9, 0.015, 0.9, 0.0, "", ((2516, .50), (4713, .50))),
    Country("VE", -4, 0.015, 1.3, 0.20, "dns", ((8048, .60), (21826, .40))),
    Country("PK", 5, 0.015, 1.4, 0.20, "dns", ((17557, .50), (45669, .50))),
    Country("VN", 7, 0.015, 1.3, 0.15, "dns", ((7552, .50), (45899, .50))),
    Country("CA", -5, 0.015, 0.8, 0.0, "", ((812, .50), (577, .50))),
    Country("ES", 1, 0.015, 0.9, 0.02, "dns", ((3352, 1.0),)),
    Country("BD", 6, 0.01, 1.4, 0.10, "dns", ((24389, .50), (45245, .50))),
    Country("KZ", 5, 0.01, 1.2, 0.15, "http-diff", ((9198, 1.0),)),
    Country("BY", 3, 0.01, 1.2, 0.20, "http-diff", ((6697, 1.0),)),
    Country("TH", 7, 0.01, 1.3, 0.10, "http-diff", ((7470, .50), (131445, .50))),
    Country("SA", 3, 0.01, 1.3, 0.20, "http-diff", ((25019, 1.0),)),
    Country("NG", 1, 0.01, 1.5, 0.02, "", ((29465, .60), (37148, .40))),
    Country("RO", 2, 0.01, 0.9, 0.0, "", ((8708, 1.0),)),
    Country("KE", 3, 0.008, 1.5, 0.02, "", ((33771, 1.0),)),
    Country("CU", -5, 0.008, 1.5, 0.20, "dns", ((27725, 1.0),)),
)


@dataclass(frozen=True)
class Software:
    name: str
    share: float
    """Global share of measurements before the per-country mobile bias."""
    amplitude: float
    """Relative size of the daily cycle (0 = flat)."""
    peak_hour: float
    """Local hour of the daily maximum."""
    weekend: float
    """Volume factor on local Saturdays and Sundays."""
    mobile: bool
    platforms: tuple[tuple[str, str, float], ...]
    """(platform, architecture, probability) of a probe running this software."""


SOFTWARE: tuple[Software, ...] = (
    Software("ooniprobe-android", 0.46, 0.55, 20.5, 1.12, True,
             (("android", "arm64", .86), ("android", "arm", .12), ("android", "amd64", .02))),
    Software("ooniprobe-ios", 0.09, 0.50, 21.0, 1.10, True, (("ios", "arm64", 1.0),)),
    Software("ooniprobe-cli", 0.22, 0.08, 3.0, 1.0, False,
             (("linux", "amd64", .62), ("linux", "arm64", .14), ("linux", "arm", .04),
              ("macos", "arm64", .12), ("macos", "amd64", .05), ("windows", "amd64", .03))),
    Software("ooniprobe-desktop", 0.17, 0.45, 14.0, 0.72, False,
             (("windows", "amd64", .60), ("windows", "386", .03), ("macos", "arm64", .25),
              ("macos", "amd64", .12))),
    Software("miniooni", 0.06, 0.30, 15.0, 0.65, False,
             (("linux", "amd64", .85), ("linux", "arm64", .10), ("macos", "arm64", .05))),
)


@dataclass(frozen=True)
class Release:
    software: str
    version: str
    engine_version: str
    days_before_end: float | None
    """Release time relative to the data's end; None = the installed base before the window."""


RELEASES: tuple[Release, ...] = (
    Release("ooniprobe-android", "3.8.8", "3.22.0", None),
    Release("ooniprobe-android", "3.9.0", "3.23.0", 40),
    Release("ooniprobe-android", "3.9.1", "3.23.1", 10),  # the failure-rate regression
    Release("ooniprobe-ios", "3.8.7", "3.22.0", None),
    Release("ooniprobe-ios", "3.9.0", "3.23.0", 30),
    Release("ooniprobe-cli", "3.22.0", "3.22.0", None),
    Release("ooniprobe-cli", "3.23.0", "3.23.0", 33),
    Release("ooniprobe-cli", "3.23.1", "3.23.1", 6),
    Release("ooniprobe-desktop", "3.9.4", "3.22.0", None),
    Release("ooniprobe-desktop", "3.10.0", "3.23.0", 26),
    Release("miniooni", "3.22.0", "3.22.0", None),
    Release("miniooni", "3.23.0", "3.23.0", 33),
    Release("miniooni", "3.23.1", "3.23.1", 6),
)
ADOPTION_CAP = 0.85
"""Share of a software's installs that eventually upgrade; the rest stay on old versions."""
ADOPTION_MIDPOINT_DAYS = 5.0
ADOPTION_SCALE_DAYS = 2.3
"""Logistic scale: adoption goes from 10 % to 90 % of the cap in about 10 days."""


@dataclass(frozen=True)
class TestKind:
    name: str
    share: float
    version: str
    report_size: float
    """Mean measurements per report (geometric)."""
    runtime: float
    """Median test_runtime in seconds."""
    failure: float
    """Base msm_failure rate."""
    anomaly: float
    """Base anomaly rate (not web_connectivity, whose anomalies come from blocking)."""
    inputs: str
    """Which input list: "url", "dns", "stun" or "" (no input)."""


TESTS: tuple[TestKind, ...] = (
    TestKind("web_connectivity", 0.700, "0.5.28", 20, 2.5, 0.05, 0.0, "url"),
    TestKind("dnscheck", 0.070, "0.9.2", 4, 1.0, 0.12, 0.01, "dns"),
    TestKind("stunreachability", 0.040, "0.4.0", 3, 0.8, 0.08, 0.02, "stun"),
    TestKind("signal", 0.020, "0.2.5", 1, 1.5, 0.02, 0.01, ""),
    TestKind("whatsapp", 0.025, "0.11.0", 1, 3.0, 0.02, 0.015, ""),
    TestKind("telegram", 0.025, "0.3.1", 1, 2.0, 0.02, 0.015, ""),
    TestKind("facebook_messenger", 0.025, "0.2.0", 1, 1.5, 0.02, 0.01, ""),
    TestKind("ndt", 0.010, "0.10.0", 1, 12.0, 0.05, 0.0, ""),
    TestKind("dash", 0.010, "0.13.0", 1, 25.0, 0.06, 0.0, ""),
    TestKind("tor", 0.010, "0.4.0", 1, 20.0, 0.08, 0.05, ""),
    TestKind("torsf", 0.005, "0.5.0", 1, 300.0, 0.10, 0.10, ""),
    TestKind("psiphon", 0.008, "0.6.0", 1, 8.0, 0.08, 0.03, ""),
    TestKind("riseupvpn", 0.004, "0.3.0", 1, 10.0, 0.15, 0.20, ""),
    TestKind("vanilla_tor", 0.004, "0.3.0", 1, 60.0, 0.05, 0.10, ""),
    TestKind("http_header_field_manipulation", 0.005, "0.2.0", 1, 2.0, 0.02, 0.01, ""),
    TestKind("http_invalid_request_line", 0.005, "0.2.1", 1, 5.0, 0.02, 0.01, ""),
    TestKind("urlgetter", 0.004, "0.2.0", 3, 1.0, 0.10, 0.05, "url"),
)

# Per-software adjustments of the test mix (factor on TestKind.share, then renormalised).
TEST_MIX_OVERRIDES: dict[str, dict[str, float]] = {
    "miniooni": {"urlgetter": 40.0, "web_connectivity": 0.7},
    "ooniprobe-ios": {"tor": 0.0, "torsf": 0.0, "vanilla_tor": 0.0, "psiphon": 0.0, "urlgetter": 0.0},
    "ooniprobe-android": {"urlgetter": 0.0, "vanilla_tor": 0.0},
}

DNS_INPUTS: tuple[str, ...] = (
    "dot://dns.google/dns-query", "https://dns.google/dns-query",
    "https://cloudflare-dns.com/dns-query", "dot://1dot1dot1dot1.cloudflare-dns.com/",
    "https://dns.quad9.net/dns-query", "dot://dns.switch.ch/dns-query",
    "https://mozilla.cloudflare-dns.com/dns-query", "udp://8.8.4.4:53",
)
STUN_INPUTS: tuple[str, ...] = (
    "stun://stun.l.google.com:19302", "stun://stun.voip.blackberry.com:3478",
    "stun://stun.ekiga.net:3478", "stun://stun.schlund.de:3478",
)

CONTROL_FAILURES: tuple[str, ...] = ("generic_timeout_error", "connection_refused", "eof_error")
"""Values of ``control_failure`` when the test helper did not answer."""


@dataclass(frozen=True)
class HelperInstance:
    rdn: str
    name: str
    provider: str
    region: str
    ipaddr: str
    ipv6addr: str
    weight: float
    """Share of web_connectivity reports using this rdn while the instance is live."""
    created_days_before_end: float | None
    """None: created before any generated data."""
    rotated: bool = False
    """True: this instance is drained then destroyed mid-window; its successor keeps the rdn."""


DNS_ZONE = "th.ooni.org"
HELPERS: tuple[HelperInstance, ...] = (
    HelperInstance("0", "0.th.ooni.org", "Hetzner", "fsn1", "88.198.54.12",
                   "2a01:4f8:1c1c:a6b1::1", 0.08, None),
    HelperInstance("1", "roaming-th-20240611093012", "Digital Ocean", "ams3", "167.99.34.201",
                   "2a03:b0c0:2:d0::1a2:4001", 0.22, None),
    HelperInstance("2", "roaming-th-20240702141533", "Digital Ocean", "fra1", "138.68.81.75",
                   "2a03:b0c0:3:d0::e37:7001", 0.22, None, rotated=True),
    HelperInstance("3", "roaming-th-20240718080247", "Digital Ocean", "lon1", "178.62.10.134",
                   "2a03:b0c0:1:d0::c4d:a001", 0.22, None),
    HelperInstance("4", "4.th.ooni.org", "Greenhost", "ams", "37.218.245.94",
                   "2a00:c6c0:0:154:4::1", 0.13, None),
    HelperInstance("5", "5.th.ooni.org", "Hetzner", "hel1", "65.21.158.47",
                   "2a01:4f9:c012:8a4e::1", 0.13, None),
)
ROTATION_DAYS_BEFORE_END = 21.0
"""When rdn 2's droplet is rotated (scaled down for short windows)."""
ROTATION_SUCCESSOR = HelperInstance(
    "2", "roaming-th-{created}", "Digital Ocean", "nyc3", "159.203.77.18",
    "2604:a880:800:14::3e:c001", 0.22, 0.0)
DRAINING_MINUTES = 240
"""Time between draining and destroying a rotated droplet (OONI's draining_time_minutes)."""


def helper_url(rdn: str) -> str:
    return f"https://{rdn}.{DNS_ZONE}"


@dataclass(frozen=True)
class Network:
    """One (country, ASN) pair with its share of all measurements."""

    cc_index: int
    cc: str
    asn: int
    weight: float


def networks() -> list[Network]:
    total = sum(c.weight for c in COUNTRIES)
    out: list[Network] = []
    for i, c in enumerate(COUNTRIES):
        s = sum(w for _, w in c.asns)
        out.extend(Network(i, c.cc, asn, c.weight / total * w / s) for asn, w in c.asns)
    return out


def software_shares() -> np.ndarray:
    """(n_countries, n_software) share of each software in each country (rows sum to 1)."""
    base = np.array([s.share for s in SOFTWARE])
    mobile = np.array([s.mobile for s in SOFTWARE])
    out = np.empty((len(COUNTRIES), len(SOFTWARE)))
    for i, c in enumerate(COUNTRIES):
        row = base * np.where(mobile, c.mobile_bias, 1.0)
        out[i] = row / row.sum()
    return out


def test_mix() -> np.ndarray:
    """(n_software, n_tests) probability of each test for each software (rows sum to 1)."""
    base = np.array([t.share for t in TESTS])
    names = [t.name for t in TESTS]
    out = np.empty((len(SOFTWARE), len(TESTS)))
    for i, s in enumerate(SOFTWARE):
        row = base.copy()
        for test, factor in TEST_MIX_OVERRIDES.get(s.name, {}).items():
            row[names.index(test)] *= factor
        out[i] = row / row.sum()
    return out
