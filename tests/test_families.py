"""The family table: every row resolves to a real diffusers class, adapter, runtime and scheduler."""

from __future__ import annotations

import pytest

from l2p.errors import UnsupportedModelError
from l2p.families import FAMILIES, Family, family, family_of_model
from l2p.latent import LatentSpec


def test_names_and_classes_are_unique() -> None:
    assert len({f.name for f in FAMILIES}) == len({f.model_class for f in FAMILIES}) == len(FAMILIES)
    for f in FAMILIES:
        assert family(f.name) is f and family_of_model(f.model_class) is f


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_row_resolves(fam: Family) -> None:
    import diffusers

    from l2p.export.base import FamilyAdapter
    from l2p.sampling.families.base import FamilyRuntime

    assert isinstance(getattr(diffusers, fam.model_class), type)  # a real diffusers transformer class
    assert issubclass(fam.adapter_class(), FamilyAdapter)
    runtime = fam.runtime_class()
    assert issubclass(runtime, FamilyRuntime)
    assert issubclass(runtime.latent_type, LatentSpec) and runtime.latent_type is not LatentSpec


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_default_scheduler_is_a_diffusers_config(fam: Family) -> None:
    """diffusers reads the default config to the same values, and l2p's numpy scheduler takes it."""
    import diffusers

    from l2p.sampling.schedulers import make_scheduler

    cfg = dict(fam.default_scheduler)
    ref = getattr(diffusers, cfg["_class_name"]).from_config(cfg).config
    assert {k: ref[k] for k in cfg if not k.startswith("_")} == {k: v for k, v in cfg.items() if not k.startswith("_")}
    make_scheduler(cfg).set_timesteps(4, **({"mu": 0.5} if ref.get("use_dynamic_shifting") else {}))


def test_unknown_names() -> None:
    with pytest.raises(UnsupportedModelError, match="'unet'.*flux"):
        family("unet")
    with pytest.raises(UnsupportedModelError, match="'UNet2DConditionModel'.*FluxTransformer2DModel"):
        family_of_model("UNet2DConditionModel")
