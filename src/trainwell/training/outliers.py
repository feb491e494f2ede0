"""Label review's outliers: cleanlab's nearest-neighbour scores, fenced per class (a class's ordinary members are never its outliers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

OUTLIER_NEIGHBOURS = 10  # cleanlab Datalab's outlier issue's k
# Neighbours are looked for among at most this many of a fold's held-out train+val images (a
# seeded sample); the others are scored against that sample as test images are. The search
# compares each scored image with every reference image, so without a cap the cost per image
# grows with the dataset (CHANGELOG has the figures). Below the cap nothing changes.
OUTLIER_REFERENCE_CAP = 10_000
SCORE_CHUNK = 50_000  # images scored against the reference at once (bounded memory)
# A class needs this many reference images for a fence of its own (quartiles of fewer are mostly
# noise); a smaller class is fenced by the whole reference's quartiles.
MIN_CLASS_REFERENCE = 20


@dataclass
class Outliers:
    """Scores and verdicts of one fold's reference (held-out train+val) and query (test) images."""

    reference_scores: np.ndarray  # cleanlab's, in [0, 1]: lower is less like the rest
    query_scores: np.ndarray
    reference_excess: np.ndarray  # log distance past its class's Q3, in that class's IQRs (of log distances)
    query_excess: np.ndarray
    fence: float

    @property
    def reference_flagged(self) -> np.ndarray:
        return self.reference_excess > self.fence

    @property
    def query_flagged(self) -> np.ndarray:
        return self.query_excess > self.fence


def outlier_scores(*, reference: np.ndarray, queries: np.ndarray, fence: float, seed: int = 0,
                   reference_labels: np.ndarray | None = None, query_labels: np.ndarray | None = None,
                   reference_cap: int = OUTLIER_REFERENCE_CAP) -> Outliers:
    """cleanlab outlier scores of `reference` embeddings among themselves (each without itself)
    and of `queries` against the reference, and which of them are outliers of their own class.

    Scored as cleanlab Datalab's outlier issue scores (mean cosine distance to the k = 10 nearest
    neighbours among every reference image, whatever its class, through OutOfDistribution): a
    mislabelled image sits among its true class and is a label issue, not an outlier. The fence
    is per class (the given label) and on the logarithm of that distance: an outlier's log
    distance is above Q3 + fence x IQR of its class's reference images' (Tukey's fence, made
    multiplicative: farther than the class's images mostly are by a factor, not by an amount).

    Why both. One fence over the whole dataset on the distances themselves (Datalab's, at 1.7;
    here 3 before) filled the list with a loose class's ordinary members: on 5,131 clean real
    digits, 20 of 32 flagged were ordinary "1"s, whose thin strokes spread more in the embedding.
    Per class on the distances, a tight class's slightly unusual members passed its narrow
    fence instead (124 flagged on the demo set with 50 planted strays, precision 0.38). Per class
    on log distances: 3 flagged on the clean digits, none of them a "1"; on the demo set 59
    flagged, 44 of the 50 strays (fence 2.5). Past `reference_cap` reference images, neighbours
    come from a seeded sample of that many. Without labels every image is of one class.
    """
    from cleanlab.outlier import OutOfDistribution

    reference_labels = np.zeros(len(reference), np.int64) if reference_labels is None else reference_labels
    query_labels = np.zeros(len(queries), np.int64) if query_labels is None else query_labels
    neighbours = min(OUTLIER_NEIGHBOURS, len(reference) - 1)
    if neighbours < 1:  # nothing to compare with: nobody is an outlier
        return Outliers(np.ones(len(reference)), np.ones(len(queries)), np.full(len(reference), -np.inf),
                        np.full(len(queries), -np.inf), fence)
    sampled = np.ones(len(reference), dtype=bool)
    if len(reference) > reference_cap:
        sampled[:] = False
        sampled[np.random.default_rng(seed).choice(len(reference), reference_cap, replace=False)] = True
    estimator = OutOfDistribution(params={"k": neighbours})
    # float64: a stray far from everything has exp(-distance / scale) below float32's range.
    reference_scores = np.ones(len(reference), dtype=np.float64)
    reference_scores[sampled] = estimator.fit_score(features=reference[sampled].astype(np.float64), verbose=False)
    reference_scores[~sampled] = _scored(estimator, reference[~sampled])
    query_scores = _scored(estimator, queries)
    # cleanlab's score is exp(-distance / scale), scale the median mean distance: back to log
    # distances (a distance of 0, ten identical neighbours, counts as 1e-12).
    scale = float(estimator.params["scaling_factor"])

    def distances(scores: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(-scale * np.log(np.maximum(scores, np.finfo(np.float64).tiny)), 1e-12))

    reference_distances, query_distances = distances(reference_scores), distances(query_scores)
    quartiles: dict[int | None, tuple[float, float]] = {None: _quartiles(reference_distances)}
    for label in np.unique(reference_labels):
        members = reference_distances[reference_labels == label]
        if len(members) >= MIN_CLASS_REFERENCE:
            quartiles[int(label)] = _quartiles(members)

    def excess(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
        out = np.empty(len(values))
        for label in np.unique(labels):
            q3, spread = quartiles.get(int(label), quartiles[None])
            members = labels == label
            out[members] = (values[members] - q3) / spread
        return out

    return Outliers(reference_scores, query_scores, excess(reference_distances, reference_labels),
                    excess(query_distances, query_labels), fence)


def _quartiles(distances: np.ndarray) -> tuple[float, float]:
    """(Q3, IQR) of some log distances; an IQR of 0 (identical images) becomes the smallest
    positive float, so only a farther image passes the fence."""
    q1, q3 = np.percentile(distances, [25, 75])
    return float(q3), max(float(q3 - q1), float(np.finfo(np.float64).tiny))


def _scored(estimator: Any, features: np.ndarray) -> np.ndarray:
    """A fitted OutOfDistribution's scores of `features`, SCORE_CHUNK rows at a time."""
    if not len(features):
        return np.ones(0)
    return np.concatenate([estimator.score(features=features[start:start + SCORE_CHUNK].astype(np.float64))
                           for start in range(0, len(features), SCORE_CHUNK)])
