"""The bin layout: where each feature's, the predictions' and each slice value's bins sit in one flat count array.

Every count the monitor keeps (totals, window) is one int64 array over all bins, so one request's rows land in it
with a single `bincount`; the layout says which run of that array belongs to what.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from service.artifact.card import ModelCard
from service.artifact.profile import OTHER, Distribution, ReferenceProfile

__all__ = ["BinLayout", "Segment", "SliceColumn"]


@dataclass(frozen=True)
class Segment:
    """A contiguous run of bins in the flat count array: one feature, the predictions, or one slice value."""

    kind: str  # "feature", "prediction" or "slice"
    name: str  # feature name, "" for predictions, slice feature for slices
    value: str  # slice value ("" otherwise)
    start: int
    distribution: Distribution  # the reference: its labels are the run's bins, its shares the training shares

    @property
    def stop(self) -> int:
        return self.start + len(self.distribution.labels)


class SliceColumn(NamedTuple):
    """A slice feature's column in the rows, and where each of its values' prediction bins start."""

    column: int
    starts: dict[str, int]  # slice value → start of its run of prediction bins
    other: int  # start of the run for values outside the profile's (`OTHER`)


class BinLayout:
    """Segments in flat order: the features (card order), the predictions, then every slice value (and `OTHER`)."""

    def __init__(self, card: ModelCard, profile: ReferenceProfile, slices: Sequence[str] = ()) -> None:
        unknown = [name for name in slices if name not in profile.slices]
        if unknown:
            offered = ", ".join(profile.slices) or "none"
            raise ValueError(f"cannot slice by {unknown}: the profile offers {offered} (≤ 20 distinct values)")
        self.features: list[Segment] = []
        start = 0
        for spec in card.features:
            self.features.append(Segment("feature", spec.name, "", start, profile.features[spec.name]))
            start = self.features[-1].stop
        self.prediction = Segment("prediction", "", "", start, profile.prediction)
        self.segments: list[Segment] = [*self.features, self.prediction]
        start = self.prediction.stop
        self.slices: list[SliceColumn] = []
        for name in slices:
            slice_spec = profile.slices[name]
            starts: dict[str, int] = {}
            for value in (*slice_spec.values, OTHER):
                reference = slice_spec.predictions.get(value) or _empty_like(profile.prediction)
                self.segments.append(Segment("slice", name, value, start, reference))
                starts[value] = start
                start = self.segments[-1].stop
            self.slices.append(SliceColumn(card.feature_names.index(name), starts, starts[OTHER]))
        self.size = start  # bins in all

    def of_kind(self, kind: str) -> list[Segment]:
        """The segments of one kind, in flat order."""
        return [segment for segment in self.segments if segment.kind == kind]


def _empty_like(distribution: Distribution) -> Distribution:
    return Distribution(
        distribution.kind, distribution.labels, tuple(0.0 for _ in distribution.labels),
        distribution.edges, distribution.categories, distribution.has_missing, tuple(0 for _ in distribution.labels),
    )  # fmt: skip
