"""The model artifact: its card, the fitted estimator loaded safely, and the reference profile of its training data.

Training and datasets live here too (`service.artifact.training`, `service.artifact.datasets`), imported only by
the commands that train. Nothing in this package imports any other part of modellens.
"""

from service.artifact.card import CARD_FILE, MODEL_FILE, FeatureSpec, FeatureType, ModelCard, Task, content_version
from service.artifact.model import Model, ModelLoadError, load_model
from service.artifact.profile import (
    MISSING,
    OTHER,
    PROFILE_FILE,
    UNSEEN,
    Distribution,
    ReferenceProfile,
    SliceSpec,
    build_profile,
    slice_label,
)

__all__ = [
    "CARD_FILE",
    "MISSING",
    "MODEL_FILE",
    "OTHER",
    "PROFILE_FILE",
    "UNSEEN",
    "Distribution",
    "FeatureSpec",
    "FeatureType",
    "Model",
    "ModelCard",
    "ModelLoadError",
    "ReferenceProfile",
    "SliceSpec",
    "Task",
    "build_profile",
    "content_version",
    "load_model",
    "slice_label",
]
