"""Scale-out: several drwatch nodes share one PostgreSQL store and split the work.

Only used with ``cluster: {enabled: true}``; the single-node path (SQLite, or PostgreSQL without a
cluster) has no engine at all and never imports the engine's package.

- ``config.py``: the ``cluster:`` section of the configuration and its cross-checks.
- ``confighash.py``: the hash of the cluster-wide part of a configuration (reloads apply on agreement).
- ``slots.py``: deterministic schedule slots, identical on every node (no clock of a leader).
- ``schema.py``: the cluster's own tables in schema ``drwatch_cluster`` (and the engine's, installed there).
- ``fence.py``: a PostgreSQL session advisory lock per validator on a dedicated connection.
- ``heartbeat.py``: the nodes table, liveness and the view the metrics read.
- ``engine.py``: the small interface the daemon talks to; ``pgqueuer_engine.py`` implements it.
"""
