"""Where models come from: a local diffusers folder, or the name of a built-in model.

Torch-free: this only resolves paths and reads JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError

ASSETS = Path(__file__).parent / "assets"
#: built-in model name -> folder inside the package
BUILTIN = {"tiny-flux": ASSETS / "tiny-flux", "tiny-sd3": ASSETS / "tiny-sd3"}
#: the script that trains each built-in model's folder (named in the error when it is absent)
BUILTIN_TRAINER = {"tiny-flux": "tools/train_tiny.py", "tiny-sd3": "tools/train_tiny_sd3.py"}


def resolve_model(model: str) -> Path:
    """A built-in model name or a local folder -> the folder. Raises InputError if neither."""
    if model in BUILTIN:
        path = BUILTIN[model]
        if not (path / "model_index.json").is_file():
            raise InputError(f"built-in model '{model}' is not present in this install ({path} has no "
                             f"model_index.json); build it from a source checkout with "
                             f"python {BUILTIN_TRAINER[model]} --out {path}, or give a local diffusers folder")
        return path
    path = Path(model).expanduser()
    if not path.is_dir():
        if looks_like_hub_id(model):
            raise InputError(f"model '{model}' is not a folder here; it looks like a model-hub id, and l2p downloads "
                             f"nothing: download it to a folder first ({download_hint(model)}), then: "
                             f"l2p export {local_name(model)} --out BUNDLE")
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


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


def looks_like_hub_id(text: str) -> bool:
    """``owner/name`` (e.g. ``black-forest-labs/FLUX.1-dev``) whose ``owner`` folder does not exist here."""
    return bool(_HUB_ID.match(text)) and not Path(text).parent.exists()


def local_name(hub_id: str) -> str:
    """The folder a hub id is downloaded to in our hints: its name part."""
    return hub_id.rsplit("/", 1)[-1]


def download_hint(hub_id: str) -> str:
    """How to get a hub model onto disk, for hints (l2p itself never downloads)."""
    return f"huggingface-cli download {hub_id} --local-dir {local_name(hub_id)}"


def builtin_model_of(manifest: Mapping[str, Any]) -> str | None:
    """The built-in model a bundle was exported from (its manifest's export source), or None."""
    source = manifest.get("export_config", {}).get("source")
    return source if source in BUILTIN else None


def check_builtin_prompts(model: str, prompts: Sequence[str]) -> None:
    """Refuse prompts the built-in ``model`` cannot draw: it knows one caption template and a
    few words (:func:`l2p.tinymodel.data.vocabulary`); anything else gives a blank or random image.

    Raises:
        InputError: naming the unknown words, or the template, and the words the model knows.
    """
    from .tinymodel.data import COLOURS, POSITIONS, SHAPES, parse_caption, vocabulary

    known = vocabulary()
    template = (f"'a <colour> <shape> at the <position>' with colour {'/'.join(COLOURS)}, shape "
                f"{'/'.join(SHAPES)}, position {'/'.join(POSITIONS)}")
    for i, text in enumerate(prompts):
        words = re.findall(r"[^\s.,;:!?]+", text.lower())
        unknown = list(dict.fromkeys(w for w in words if w not in known))
        if unknown:
            raise InputError(f"prompt {i} {text!r}: unknown word(s) {', '.join(unknown)}; the built-in model "
                             f"{model} knows only: {', '.join(known)} (captions {template})")
        try:
            parse_caption(text)
        except ValueError:
            raise InputError(f"prompt {i} {text!r} is not a caption the built-in model {model} can draw; "
                             f"write {template}, e.g. 'a red circle at the top left'") from None


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
