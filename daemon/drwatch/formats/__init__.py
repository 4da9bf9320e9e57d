"""File formats drwatch reads and writes: manifests (seals), signatures, Parquet and safetensors facts."""
