"""The O(1) recursive model behind :class:`~.Detector`: plain floats, no pandas.

On the transformed scale ``y`` (see :mod:`.transform`) each step is predicted as::

    ŷ = L + φ·T + S[phase]

a robust additive Holt-Winters model: level ``L`` and damped trend ``T`` (exponentially
weighted), a seasonal profile ``S`` of at most :data:`MAX_BUCKETS` buckets per period
(linearly interpolated between bucket centres when the period has more steps). The
residual ``e = y − ŷ`` is standardised by a robust scale ``σ = 1.2533 · EW mean |e|``
(``|e|`` capped at ``CLIP``·σ, so one outlier cannot blow it up): ``z = e / σ``.

**Sustained evidence.** A small shift or a trend change hides in single points; an
exponentially weighted mean of ``z`` (weight ``SUSTAIN``, z capped at ±6) standardised
for independent noise, ``w``, pools it. The statistic tested is ``max(z, w)`` for spikes
and ``max(−z, −w)`` for drops.

**Calibration.** The statistic is not assumed normal. Each tail of its distribution is learnt
online by peaks-over-threshold: a stochastic-approximation estimate ``u`` of the 95 %
quantile (of the spike statistic, of the drop statistic) and the exponentially weighted
mean excess ``m`` above it; beyond ``u`` the tail is exponential, so::

    P(X ≥ x) ≈ 0.05 · exp(−(x − u) / m)

The score is ``1 − p`` with ``p`` that one-sided tail probability (drops or spikes) or
``min(1, 2 · min(p_up, p_down))`` for both directions. A score of 0.99 therefore means:
under the model learnt from this series' recent normal behaviour, a point at least this
extreme (in the watched direction) has an estimated probability of 1 %; on clean data
about 1 % of the points score ≥ 0.99 (tested in tests/ooniutils/test_detector.py).
Caveat: with a weekly season the profile needs weeks to settle and the score is
conservative meanwhile (0.2–0.9 % instead of 1 % in the first two months of hourly data).
A missing point (non-count series) scores ``1 − q^k``: ``q`` the learnt rate of missing
points, ``k`` the length of the current run of them.

**Anomalies do not teach the model.** A point whose ``z`` alone reaches the alarm
threshold (two-sided) only advances the level by the trend; after ``adapt_after`` consecutive such
points the level is reset to the current value (the new normal; the alarm ends).
"""

from __future__ import annotations

import math

TAU = 0.05
"""Tail fraction above the POT threshold ``u``."""
U0 = 1.6449
"""Initial ``u``: the normal distribution's 95 % quantile."""
M0 = 0.4178
"""Initial mean excess above ``u`` (normal distribution)."""
SA_STEP = 0.02
"""Stochastic-approximation step of ``u`` (in z units)."""
EXCESS_MEMORY = 100
"""Exceedances remembered by the mean-excess estimate (EW weight 1/100 when warm)."""
SCALE_MEMORY = 100
"""Points remembered by the scale estimate."""
MISSING_MEMORY = 2000
CLIP = 3.0
MAX_BUCKETS = 288
BETA = 0.0
"""Trend smoothing (relative to alpha). 0: no trend term — a slowly starting trend must
show as an anomaly, not be learnt as the new slope within a few hundred points."""
PHI = 0.98
GAMMA_CYCLE = 0.25
"""Weight of the newest cycle in a seasonal bucket (memory of about four periods)."""
Z_CAP = 1e6
SUSTAIN = 0.1
"""Weight of the newest point in the sustained-evidence average of z."""
SUSTAIN_SD = math.sqrt(SUSTAIN / (2 - SUSTAIN))
"""Standard deviation of that average for independent unit-variance z."""
CLIP_W = 6.0
"""z is capped at this in the sustained average (one outlier is the point test's job)."""


def tail(x: float, u: float, m: float) -> float:
    d = (x - u) / m
    if d < -3.0:
        return 1.0
    p = TAU * math.exp(-d) if d < 700 else 0.0
    return p if p < 1.0 else 1.0


class Core:
    """State for one series after warm-up; every method is O(1)."""

    __slots__ = ("period", "nb", "kp", "S", "L", "T", "alpha", "ab", "g", "mad", "floor",
                 "u_up", "m_up", "n_up", "u_dn", "m_dn", "n_dn", "q", "miss_run", "n",
                 "alarm_p", "adapt_after", "run", "run_abs", "wz", "e", "z", "p_up", "p_dn", "yhat", "i0", "w",
                 "both", "up", "down")

    def __init__(self, period: int, alpha: float, floor: float, alarm_p: float, adapt_after: int,
                 direction: str) -> None:
        self.period = period
        self.nb = min(period, MAX_BUCKETS)
        self.kp = self.nb / period
        self.S = [0.0] * self.nb
        self.L = 0.0
        self.T = 0.0
        self.alpha = alpha
        self.ab = alpha * BETA
        self.g = 1.0 - (1.0 - GAMMA_CYCLE) ** (self.nb / period) if period > 1 else 0.0
        self.mad = 0.0
        self.floor = floor
        self.u_up = self.u_dn = U0
        self.m_up = self.m_dn = M0
        self.n_up = self.n_dn = 0
        self.q = 0.0
        self.miss_run = 0
        self.n = 0
        self.alarm_p = alarm_p
        self.adapt_after = adapt_after
        self.run = 0
        self.run_abs = 0.0
        self.wz = 0.0
        self.e = self.z = self.yhat = self.w = 0.0
        self.p_up = self.p_dn = 1.0
        self.i0 = 0
        self.both = direction == "both"
        self.up = direction == "spikes"
        self.down = direction == "drops"

    @property
    def sigma(self) -> float:
        s = 1.2533 * self.mad
        return s if s > self.floor else self.floor

    def seasonal(self, phase: int) -> float:
        if self.nb == 1:
            self.i0, self.w = 0, 0.0
            return self.S[0]
        if self.nb == self.period:
            self.i0, self.w = phase, 0.0
            return self.S[phase]
        pos = phase * self.kp
        i0 = int(pos)
        w = pos - i0
        i1 = i0 + 1 if i0 + 1 < self.nb else 0
        self.i0, self.w = i0, w
        return self.S[i0] * (1.0 - w) + self.S[i1] * w

    def score(self, y: float, phase: int) -> float:
        """Score the transformed value ``y`` at ``phase`` (0 … period − 1) without learning;
        returns the p-value in the caller's direction."""
        yhat = self.L + PHI * self.T + self.seasonal(phase)
        e = y - yhat
        z = e / self.sigma
        if not -Z_CAP < z < Z_CAP:
            z = Z_CAP if e > 0 else -Z_CAP
        self.yhat, self.e, self.z = yhat, e, z
        ws = (self.wz + SUSTAIN * (z - self.wz)) / SUSTAIN_SD
        self.p_up = pu = tail(z if z > ws else ws, self.u_up, self.m_up)
        self.p_dn = pd = tail(-z if z < ws else -ws, self.u_dn, self.m_dn)
        if self.up:
            return pu
        if self.down:
            return pd
        p = 2.0 * (pu if pu < pd else pd)
        return p if p < 1.0 else 1.0

    def learn(self) -> None:
        """Learn from the point last passed to :meth:`score`."""
        self.n += 1
        self.miss_run = 0
        z = self.z
        self.wz += SUSTAIN * ((z if -CLIP_W < z < CLIP_W else (CLIP_W if z > 0 else -CLIP_W)) - self.wz)
        self.q -= self.q / MISSING_MEMORY
        # only point evidence freezes learning: sustained evidence alone (a slow drift)
        # keeps being learnt, or a random walk would be frozen until adapt_after
        pu, pd = tail(z, self.u_up, self.m_up), tail(-z, self.u_dn, self.m_dn)
        p2 = 2.0 * (pu if pu < pd else pd)
        if p2 <= self.alarm_p:  # an anomaly: do not learn from it
            self.run += 1
            a = abs(self.e)
            self.run_abs += a
            if self.run >= self.adapt_after:  # a new normal: jump the level to it
                self.L += self.e
                self.wz = 0.0
                # and let the scale grow if the anomaly was a burst of variance
                self.mad = max(self.mad, 0.25 * self.run_abs / self.run)
                self.run = 0
                self.run_abs = 0.0
            else:
                self.L += PHI * self.T
            self.T *= PHI
            return
        self.run = 0
        self.run_abs = 0.0
        sig = self.sigma
        e = self.e
        lim = CLIP * sig
        ec = lim if e > lim else (-lim if e < -lim else e)
        self.L += PHI * self.T + self.alpha * ec
        self.T = PHI * self.T + self.ab * ec
        if self.nb > 1:
            g = self.g * ec
            w = self.w
            if w == 0.0:
                self.S[self.i0] += g
            else:
                self.S[self.i0] += g * (1.0 - w)
                i1 = self.i0 + 1 if self.i0 + 1 < self.nb else 0
                self.S[i1] += g * w
        a = abs(e)
        lam = 1.0 / (self.n + 10) if self.n < SCALE_MEMORY - 10 else 1.0 / SCALE_MEMORY
        self.mad += lam * ((a if a < lim else lim) - self.mad)
        ws = self.wz / SUSTAIN_SD
        self.u_up, self.n_up, self.m_up = _tail_step(z if z > ws else ws, self.u_up, self.n_up, self.m_up)
        self.u_dn, self.n_dn, self.m_dn = _tail_step(-z if z < ws else -ws, self.u_dn, self.n_dn, self.m_dn)

    def score_missing(self) -> float:
        """p-value of one more missing point (``q`` to the power of the run length)."""
        q = self.q if self.q > 0.5 / MISSING_MEMORY else 0.5 / MISSING_MEMORY
        return q ** (self.miss_run + 1)

    def learn_missing(self) -> None:
        """A missing point: the level follows its trend, the missing rate is learnt."""
        self.miss_run += 1
        self.q += (1.0 - self.q) / MISSING_MEMORY
        self.L += PHI * self.T
        self.T *= PHI

    def bound(self, p: float, side: int) -> float:
        """The transformed value at which the one-sided tail probability is ``p``
        (side +1: upper, −1: lower), for charts."""
        u, m = (self.u_up, self.m_up) if side > 0 else (self.u_dn, self.m_dn)
        x = u + m * math.log(TAU / p)
        return self.yhat + side * x * self.sigma

    def state_size(self) -> int:
        """Number of floats held (constant once built: it does not grow with points)."""
        return len(self.S) + len(self.__slots__)


def _tail_step(x: float, u: float, n: int, m: float) -> tuple[float, int, float]:
    """One step of a tail's tracker (either side): the threshold ``u`` follows the
    (1 - TAU) quantile by stochastic approximation; above it, the mean excess ``m`` over
    ``u`` is updated (exceedances capped at 10 m, memory EXCESS_MEMORY) and counted in ``n``."""
    if x > u:
        ex = x - u
        cap = 10.0 * m
        lam = 1.0 / (n + 11) if n + 1 < EXCESS_MEMORY else 1.0 / EXCESS_MEMORY
        return u + SA_STEP * (1.0 - TAU), n + 1, max(m + lam * ((ex if ex < cap else cap) - m), 1e-3)
    return u - SA_STEP * TAU, n, m
