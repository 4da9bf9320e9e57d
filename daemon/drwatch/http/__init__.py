"""The HTTP endpoints (/metrics, health, API) with their connection hygiene, TLS and authentication."""
