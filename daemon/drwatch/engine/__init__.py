"""The engine: scheduling, running validators, sandboxes and the long-running daemon's lifecycle."""
