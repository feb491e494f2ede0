"""Image properties judged against the whole dataset and each file's class: dark, light, low_information and blurry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from trainwell.kinds import Finding, Note
from trainwell.params import AuditParams

# Below this many scored files (in the dataset, or in a class) a median and a spread say little:
# a dataset that small gets only the absolute bounds, a class that small is judged by the dataset.
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
    bound: str  # the AuditParams field: past it a file is a defect on its own (unless most of the dataset is)
    outlier_bound: str  # past this one, an outlier of its class and of the dataset is reported
    toward_bad: Callable[[np.ndarray], np.ndarray]
    describe: Callable[[float], str]
    unit: str


PROPERTIES = (
    Property("dark", "brightest", "dark_below", "dark_outlier_below", np.log1p,
             lambda value: f"the brightest 1% of pixels are at most {value:.0f} of 255", "of 255 (brightest 1%)"),
    # Headroom below white: a washed-out image has little, whatever its content.
    Property("light", "darkest", "light_above", "light_outlier_above", lambda values: np.log(256.0 - values),
             lambda value: f"the darkest 1% of pixels are at least {value:.0f} of 255", "of 255 (darkest 1%)"),
    Property("low_information", "entropy", "min_entropy", "min_entropy_outlier", lambda values: values,
             lambda value: f"brightness entropy {value:.2f} bits", "bits of brightness entropy"),
    Property("blurry", "sharpness", "blurry_below", "blurry_outlier_below", np.log1p,
             lambda value: f"variance of the Laplacian {value:.1f}", "variance of the Laplacian"),
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


def _robust_z(values: np.ndarray) -> np.ndarray:
    """Each value's distance below the median in robust spreads (0 for all when there are too few)."""
    if len(values) < MIN_FILES_FOR_OUTLIERS:
        return np.zeros(len(values))
    centre = float(np.median(values))
    return (values - centre) / _spread(values, centre)


def _class_z(values: np.ndarray, raw: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each value's robust z against its own class (the dataset's where the class is too small),
    and the median raw score of what it was measured against."""
    z, medians = _robust_z(values), np.full(len(values), float(np.median(raw)))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) >= MIN_FILES_FOR_OUTLIERS:
            z[members] = _robust_z(values[members])
            medians[members] = float(np.median(raw[members]))
    return z, medians


def property_findings(paths: list[str], labels: list[str], columns: dict[str, np.ndarray], *,
                      policy: AuditParams) -> tuple[list[Finding], list[Note]]:
    """dark, light, low_information and blurry findings for the files with scores (NaN: none), and
    a note for each property most of the dataset shares.

    Per property, a file is reported when its score is past the absolute bound (a defect on its
    own: nearly black, nearly white, nearly flat, no edges at all), or past the looser outlier
    bound AND a robust outlier (z-score past audit.outlier_z) of its own class (of the dataset,
    for a class under MIN_FILES_FOR_OUTLIERS files). A class whose members are often dim (a
    flower on a black ground, handwriting) is not a class of outliers, and one soft picture
    among crisp ones still stands out. When the dataset's median is past a bound, that is a
    property of the data, not of single files: it is one note, with the distribution, and only
    files that also stand out are reported.
    """
    findings: list[Finding] = []
    notes: list[Note] = []
    label_array = np.asarray(labels, dtype=object)
    for prop in PROPERTIES:
        raw = columns[prop.column].astype(np.float64)
        scored = np.flatnonzero(np.isfinite(raw))
        if not len(scored):
            continue
        values = prop.toward_bad(raw[scored])
        bound = float(prop.toward_bad(np.array([getattr(policy, prop.bound)]))[0])
        outlier_bound = float(prop.toward_bad(np.array([getattr(policy, prop.outlier_bound)]))[0])
        centre = float(np.median(values))
        class_z, class_median = _class_z(values, raw[scored], label_array[scored])
        if centre < outlier_bound:
            notes.append(_shared_note(prop, raw[scored], values < outlier_bound, policy=policy))
        defect = (values < bound) & (centre >= bound)
        outlier = (values < outlier_bound) & (class_z < -policy.outlier_z)
        for position in np.flatnonzero(defect | outlier).tolist():
            what = prop.describe(float(raw[scored[position]]))
            if defect[position]:
                why = f"past audit.{prop.bound} = {getattr(policy, prop.bound):g}"
            else:
                why = (f"an outlier of its class (robust z {class_z[position]:.1f} from the class median "
                       f"{class_median[position]:.4g}), "
                       f"past audit.{prop.outlier_bound} = {getattr(policy, prop.outlier_bound):g}")
            findings.append(Finding(paths[scored[position]], prop.kind, f"{what}: {why}"))
    return findings, notes


def _shared_note(prop: Property, raw: np.ndarray, past: np.ndarray, *, policy: AuditParams) -> Note:
    low, median, high = np.percentile(raw, [5, 50, 95]).tolist()
    return Note(prop.kind, int(past.sum()), (
        f"{int(past.sum())} of {len(raw)} files are past audit.{prop.outlier_bound} = "
        f"{getattr(policy, prop.outlier_bound):g} (median {median:.4g}, 5th-95th percentile {low:.4g}-{high:.4g} "
        f"{prop.unit}): a property of this dataset, reported once; single files are reported only when they "
        "also stand out from their class"))
