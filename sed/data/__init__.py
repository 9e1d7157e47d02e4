"""Datasets and data pipeline."""
