"""Prometheus metrics: collectors that project the snapshot, and the cached exposition bytes."""
