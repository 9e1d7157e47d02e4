"""Datasets, training data pipeline and evaluation."""
from . import datasets  # noqa: F401  (registers every dataset)
