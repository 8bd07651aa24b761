"""Subcommands beyond export/validate/sample: registered into :mod:`l2p.cli`."""

from __future__ import annotations
