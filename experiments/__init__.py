"""Experiment scripts: each parses a typed config and calls library functions (`python -m experiments.NAME`)."""
