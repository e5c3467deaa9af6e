"""Training: the trainer (fit), model setup, optimiser, batching, the lr sweep and vit bench."""
