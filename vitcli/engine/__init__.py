"""The engine: `jobs` holds its entry points (train, evaluate, fewshot); the parts are grouped below."""
