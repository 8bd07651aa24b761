"""Torch-free runtime: one :class:`Engine` interface and lazily imported backends."""

from .base import Engine
from .registry import BACKENDS, load_engine

__all__ = ["BACKENDS", "Engine", "load_engine"]
