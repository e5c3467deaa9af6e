"""Checkpoint formats in and out: reading `--from`, fitting a state dict into a model, safe loading, export."""
