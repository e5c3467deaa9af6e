"""vit: pretrain, fine-tune, evaluate and few-shot-evaluate Vision Transformers from YAML recipes."""

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it from here
