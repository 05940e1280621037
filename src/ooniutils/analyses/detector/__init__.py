"""A general anomaly detector for any metric an operator watches.

Counts, rates, fractions and continuous (also negative) values; any step from 1 minute
to 1 day (irregular timestamps are resampled: :func:`~.params.resample`); a season learnt
from the data (none, daily, weekly or another period: :mod:`.season`); drops, spikes or
both. Streaming (:class:`Detector`, O(1) per point, constant memory) and batch
(:func:`detect_anomalies`: scores and alarm episodes).

Modules: :mod:`.params` (settings, steps, resampling), :mod:`.transform` (value kinds),
:mod:`.season` (period detection), :mod:`.core` (the recursive model and the calibrated
score — read its docstring for what a score of 0.99 means), :mod:`.build` (warm-up),
:mod:`.stream` (streaming), :mod:`.batch` (DataFrames, episodes).

The hourly flow notebooks keep :class:`~ooniutils.analyses.flow.FlowDetector`, which is
better on hourly measurement counts (BENCHMARKS.md, "General detector").
"""

from .batch import Anomalies, detect_anomalies, episodes
from .params import DetectorParams
from .season import Season
from .stream import Detector, Point

__all__ = ["Anomalies", "Detector", "DetectorParams", "Point", "Season", "detect_anomalies", "episodes"]
