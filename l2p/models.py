"""Where models come from: a local diffusers folder, or the name of a built-in model.

Torch-free: this only resolves paths and reads JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError

ASSETS = Path(__file__).parent / "assets"
#: built-in model name -> folder inside the package
BUILTIN = {"tiny-flux": ASSETS / "tiny-flux"}


def resolve_model(model: str) -> Path:
    """A built-in model name or a local folder -> the folder. Raises InputError if neither."""
    if model in BUILTIN:
        path = BUILTIN[model]
        if not (path / "model_index.json").is_file():
            raise InputError(f"built-in model '{model}' is not present in this install ({path})")
        return path
    path = Path(model).expanduser()
    if not path.is_dir():
        raise InputError(
            f"model '{model}' is neither a local diffusers folder nor a built-in model "
            f"({', '.join(BUILTIN)}); no model hub is used: download the checkpoint to a folder first"
        )
    if not (path / "model_index.json").is_file() and not (path / "transformer" / "config.json").is_file():
        raise InputError(
            f"'{path}' is not a diffusers folder: expected model_index.json (a pipeline folder) "
            "or transformer/config.json (a transformer-only folder)"
        )
    return path


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"missing file {path}") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object")
    return data


#: optional files in a model folder with l2p defaults (height, width, max_sequence_length,
#: num_inference_steps, heldout_captions); diffusers ignores them
DEFAULTS_FILES = ("l2p_defaults.json", "l2p_tiny.json")


def model_defaults(path: Path) -> dict[str, Any]:
    """The model folder's l2p defaults (empty if it has none)."""
    for name in DEFAULTS_FILES:
        if (path / name).is_file():
            return read_json(path / name)
    return {}
