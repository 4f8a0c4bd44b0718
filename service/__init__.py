"""modellens model service: a scikit-learn model behind an HTTP API that watches itself."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("modellens")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
