"""Configuration: the top-level model composed from validator, storage and cluster configs, loaded and checked."""
