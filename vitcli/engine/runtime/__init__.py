"""Where and how the engine runs: device and process group, DDP/FSDP2, signals, progress display."""
