"""Core types and helpers every layer uses: results, errors, durations, secrets, logs, safe text."""
