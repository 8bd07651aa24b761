"""Torch-free calibration: capture trajectories through an Engine, fit, search a schedule."""
