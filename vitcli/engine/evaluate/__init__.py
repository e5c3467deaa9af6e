"""Evaluation: evaluators (classification, few-shot), the few-shot solver and metrics."""
