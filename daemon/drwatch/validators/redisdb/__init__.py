"""Redis: restore drills of RDB and AOF snapshots into a throwaway redis-server (``redis_restore``)."""
