"""Synthetic OONI-like data with known incidents, for demos, notebooks and detector tests.

:func:`generate` fills a store (fastpath, test_helper_instances,
event_detector_changepoints, citizenlab) and returns a :class:`GroundTruth` listing every
injected incident (country outage, probe-type drop, slow decline, test-helper failure,
version regression, blocking changes, short drops) with its UTC window, keys and size.
:func:`generate_frames` yields the same data as DataFrames without a store.

Same ``seed`` (and days/rows/end) → identical rows. See ``world.py`` for the simulated
countries, software, tests and test helpers, and ``plan.py`` for where incidents go.
"""

from .plan import DEFAULT_CHUNK_ROWS, ROWS_PER_DAY, Plan, default_rows, make_plan
from .run import generate, generate_frames
from .truth import GroundTruth, Incident

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "ROWS_PER_DAY",
    "GroundTruth",
    "Incident",
    "Plan",
    "default_rows",
    "generate",
    "generate_frames",
    "make_plan",
]
