"""Experiment configurations: data only, one file per experiment, read by `trainers`."""
