"""modellens model service."""
