"""What a run leaves on disk: the run directory, training checkpoints, metrics.jsonl."""
