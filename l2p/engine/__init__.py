"""Torch-free runtime: one :class:`Engine` interface and lazily imported backends."""

from .base import Engine
from .registry import BACKENDS, device_backends, open_engine

__all__ = ["BACKENDS", "Engine", "device_backends", "open_engine"]
