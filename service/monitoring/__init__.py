"""The model watching itself: serving instruments, input drift and data quality, and the shadow challenger.

Everything here is off the HTTP layer: it takes validated rows and predictions and exports OpenTelemetry
instruments. It imports only `service.artifact` (the card and the reference profile).
"""

from service.monitoring.instruments import ModelInstruments
from service.monitoring.monitor import ModelMonitor
from service.monitoring.quality import QUALITY_REASONS, QualityIssue
from service.monitoring.shadow import ShadowScorer

__all__ = ["QUALITY_REASONS", "ModelInstruments", "ModelMonitor", "QualityIssue", "ShadowScorer"]
