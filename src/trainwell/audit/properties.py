"""Image properties judged against the whole dataset: dark, light, low_information and blurry as outliers, with absolute bounds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from trainwell.kinds import Finding
from trainwell.params import AuditParams

# Below this many scored files a median and a spread say little: only the absolute bounds apply.
MIN_FILES_FOR_OUTLIERS = 10
# The dataset's own lower tail that counts as normal variation: its lowest 2% (see _spread).
TAIL_FRACTION = 0.02
# The smallest spread, in the compared units (ln for the logged scores, bits for entropy): a set of
# near-identical synthetic images would otherwise make a 1% difference look like a 10-sigma outlier.
MIN_SPREAD = 0.05


@dataclass(frozen=True)
class Property:
    """One image property: the cached score it reads, and how that score is compared.

    `toward_bad` maps raw scores so that lower is worse for every property; the logged ones are
    multiplicative quantities (an exposure, a contrast squared), whose spread is a ratio.
    """

    kind: str
    column: str
    bound: str  # the AuditParams field: past it a file is always reported
    outlier_bound: str  # past this one, only as an outlier (or when the dataset's median is past it too)
    toward_bad: Callable[[np.ndarray], np.ndarray]
    describe: Callable[[float], str]


PROPERTIES = (
    Property("dark", "brightest", "dark_below", "dark_outlier_below", np.log1p,
             lambda value: f"the brightest 1% of pixels are at most {value:.0f} of 255"),
    # Headroom below white: a washed-out image has little, whatever its content.
    Property("light", "darkest", "light_above", "light_outlier_above", lambda values: np.log(256.0 - values),
             lambda value: f"the darkest 1% of pixels are at least {value:.0f} of 255"),
    Property("low_information", "entropy", "min_entropy", "min_entropy_outlier", lambda values: values,
             lambda value: f"brightness entropy {value:.2f} bits"),
    Property("blurry", "sharpness", "blurry_below", "blurry_outlier_below", np.log1p,
             lambda value: f"variance of the Laplacian {value:.1f}"),
)


def _spread(values: np.ndarray, centre: float) -> float:
    """A robust standard deviation of `values` that also covers the dataset's own lower tail.

    The larger of two estimates, equal for normally distributed scores: the median absolute
    deviation (scaled by 1.4826), which describes the bulk, and the distance from the median down
    to the lowest 2% (scaled by the normal quantile of that rank). Real photographs have a long
    lower tail: cropped at random, a few percent are out-of-focus background or clear sky, with
    Laplacian variances a thousandth of the median. The MAD alone calls each of those an outlier;
    with the tail, they are normal variation, while one odd file in a homogeneous set still
    stands far out. The rank is never the lowest file, so one outlier cannot widen the spread.
    """
    rank = max(1, int(TAIL_FRACTION * len(values)))
    tail_quantile = -NormalDist().inv_cdf((rank + 0.5) / len(values))
    mad = 1.4826 * float(np.median(np.abs(values - centre)))
    # The rank-th smallest value: a partition, not a sort (linear in the file count).
    return max(mad, (centre - float(np.partition(values, rank)[rank])) / tail_quantile, MIN_SPREAD)


def property_findings(paths: list[str], columns: dict[str, np.ndarray], *, policy: AuditParams) -> list[Finding]:
    """dark, light, low_information and blurry findings for the files with scores (NaN: none).

    Per property, a file is reported when its score is past the absolute bound (so a dataset
    that is bad throughout is still caught), or past the looser outlier bound and either a
    robust outlier of this dataset (z-score past audit.outlier_z) or in a dataset whose median
    is past that bound too. The outlier bound keeps the least sharp of a set of excellent
    pictures from being called blurry.
    """
    findings = []
    for prop in PROPERTIES:
        raw = columns[prop.column].astype(np.float64)
        scored = np.flatnonzero(np.isfinite(raw))
        if not len(scored):
            continue
        values = prop.toward_bad(raw[scored])
        bound = float(prop.toward_bad(np.array([getattr(policy, prop.bound)]))[0])
        outlier_bound = float(prop.toward_bad(np.array([getattr(policy, prop.outlier_bound)]))[0])
        centre = float(np.median(values))
        median = float(np.median(raw[scored]))
        z = (values - centre) / _spread(values, centre) if len(scored) >= MIN_FILES_FOR_OUTLIERS \
            else np.zeros(len(values))
        outlier_limit = f"audit.{prop.outlier_bound} = {getattr(policy, prop.outlier_bound):g}"
        for position in np.flatnonzero((values < bound) | (values < outlier_bound)).tolist():
            what = prop.describe(float(raw[scored[position]]))
            if values[position] < bound:
                why = f"past audit.{prop.bound} = {getattr(policy, prop.bound):g}, always reported"
            elif z[position] < -policy.outlier_z:
                why = (f"an outlier in this dataset (median {median:.4g}, robust z {z[position]:.1f}) and past "
                       f"{outlier_limit}")
            elif centre < outlier_bound:
                why = f"past {outlier_limit}, as is most of this dataset (median {median:.4g})"
            else:
                continue
            findings.append(Finding(paths[scored[position]], prop.kind, f"{what}: {why}"))
    return findings
