"""An OOM or a timeout under a limit lower than the notebook's line asked says why.

Before: "MaxMem": 4000 on a host with max_mem_mb = 1000 failed with "killed by the memory
cap (1000 MB, cgroup-v1)" and no word of the 4000 the operator wrote.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from jupycron.models import JobSpec, Notebook, RunStatus
from jupycron.runner import _name_lowered_limit, effective_limits


def _nb(**spec) -> Notebook:
    return Notebook("x_autorun.ipynb", 0.0, 0, JobSpec(every="1 hour", **spec))


_FIXTURE = hsettings(suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FIXTURE
@given(asked=st.integers(1, 10**9), cap=st.integers(1, 10**6))
def test_oom_names_the_lowered_maxmem(settings, asked, cap):
    s = replace(settings, max_mem_mb=cap)
    nb = _nb(max_mem_mb=asked)
    limit, _ = effective_limits(s, nb)
    text = _name_lowered_limit(s, nb, RunStatus.OOM, f"killed by the memory cap ({limit} MB, x)")
    assert text is not None
    assert (f"MaxMem {asked} MB is above the max_mem_mb setting {cap}" in text) == (asked > cap)
    assert _name_lowered_limit(s, nb, RunStatus.FAILED, "boom") == "boom"


@_FIXTURE
@given(asked=st.floats(1, 10**7), cap=st.floats(1, 10**6))
def test_timeout_names_the_lowered_maxruntime(settings, asked, cap):
    s = replace(settings, max_runtime_s=cap)
    nb = _nb(max_runtime_s=asked)
    text = _name_lowered_limit(s, nb, RunStatus.TIMEOUT, "MaxRuntime exceeded")
    assert text is not None
    assert ("is above the max_runtime_s setting" in text) == (asked > cap)


def test_no_line_and_no_error_are_left_alone(settings):
    assert _name_lowered_limit(settings, Notebook("x_autorun.ipynb", 0.0, 0, None), RunStatus.OOM, "x") == "x"
    assert _name_lowered_limit(settings, _nb(max_mem_mb=10**6), RunStatus.OOM, None) is None
