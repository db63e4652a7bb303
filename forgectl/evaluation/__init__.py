"""Evaluation: datasets, metrics, perturbations, reports."""
