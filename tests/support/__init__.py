"""Reusable test doubles and process helpers for modellens' integration tests."""
