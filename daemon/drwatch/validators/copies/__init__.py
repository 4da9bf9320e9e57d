"""Validator family ``copies``: ``replica`` and ``dataset``, which prove copies against a recovery point."""
