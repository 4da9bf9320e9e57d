"""Validator family ``model``: ``model_weights`` and inference smoke tests of restored models."""
