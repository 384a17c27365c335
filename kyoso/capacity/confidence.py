"""How far a machine's available hours can be trusted: ``confidence``, grounded in the
forecast's measured error, apart from ``history_coverage``, how much of its planned time the
machine reported.

The capacity backtest (``bench/backtest.py --calibrate``) simulates a region of 30
factories (200 machines) for five weeks, forecasts each machine's available hours for the
next 7 days from its last ``d`` days of history alone, and compares them with the idle
hours it then had. The error for that much history is ``sum |forecast - realized| / sum
realized`` over the machines: how far off a machine's available hours are, as a share of
them. :data:`CALIBRATION` holds it by the machines' mean *observed* days of history (a
machine on one shift observes a third of the wall time). A machine's confidence is one
minus that error at its own observed history (linear between the lengths measured, the
first's below and the last's beyond), never below 0: 0.75 reads "expect these available
hours to be off by about a quarter of them". A machine whose capacity is withdrawn has
confidence 0.
"""

from bisect import bisect_right
from typing import Final

__all__ = ["CALIBRATION", "confidence"]

CALIBRATION: Final[tuple[tuple[float, float], ...]] = (
    # (mean observed days of history, error of available): bench/backtest.py --calibrate
    (0.19, 1.024),
    (0.31, 0.996),
    (0.63, 0.808),
    (1.19, 0.448),
    (2.41, 0.319),
    (3.64, 0.292),
    (7.27, 0.258),
    (10.91, 0.24),
    (14.54, 0.234),
)


def confidence(observed_s: float) -> float:
    """One minus the backtest's mean error for ``observed_s`` of history, in [0, 1]."""
    days = observed_s / 86_400
    lengths = [d for d, _ in CALIBRATION]
    i = bisect_right(lengths, days)
    if i == 0:
        error = CALIBRATION[0][1]
    elif i == len(CALIBRATION):
        error = CALIBRATION[-1][1]
    else:
        (d0, e0), (d1, e1) = CALIBRATION[i - 1], CALIBRATION[i]
        error = e0 + (e1 - e0) * (days - d0) / (d1 - d0)
    return min(1.0, max(0.0, 1.0 - error))
