"""Run settings: one frozen object, every field checked on construction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from l2p.errors import InputError
from l2p.predictor.presets import PRESETS
from l2p.predictor.schedule import check_count
from l2p.sampling.settings import Method, RunSettings


def test_defaults_and_frozen() -> None:
    s = RunSettings()
    assert (s.steps, s.seed, s.method, s.full_steps, s.schedule, s.guidance) == (50, 0, "full", None, None, 3.5)
    assert (s.cfg_scale, s.cfg_forecast) == (None, "branches")  # None: the family's diffusers default
    assert RunSettings(cfg_scale=4).cfg_scale == 4.0 and type(RunSettings(cfg_scale=4).cfg_scale) is float
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 3  # type: ignore[misc]
    assert RunSettings(steps=np.int64(7)).steps == 7 and type(RunSettings(steps=np.int64(7)).steps) is int


@pytest.mark.parametrize("kwargs, words", [
    ({"steps": 0}, ["--steps 0", "1..1000"]),
    ({"steps": 1001}, ["--steps 1001", "1..1000"]),
    ({"steps": 5.0}, ["--steps 5.0", "not an integer"]),
    ({"steps": True}, ["--steps True", "not an integer"]),
    ({"seed": -1}, ["--seed -1", "0..2**63-1"]),
    ({"seed": 2**63}, [f"--seed {2**63}"]),
    ({"steps": 10, "method": "fora", "full_steps": 11}, ["--full-steps 11", "1..10"]),
    ({"steps": 10, "method": "fora", "full_steps": 0}, ["--full-steps 0"]),
    ({"steps": 10, "method": "fora"}, ["needs --full-steps"]),
    ({"method": "magic"}, ["unknown method 'magic'", *PRESETS]),
    ({"method": "l2p:../x"}, ["letters, digits"]),
    ({"guidance": float("nan")}, ["--guidance nan", "finite"]),
    ({"guidance": float("inf")}, ["--guidance inf"]),
    ({"cfg_scale": 0.5}, ["--cfg-scale 0.5", "1..100", "1 turns classifier-free guidance off"]),
    ({"cfg_scale": float("nan")}, ["--cfg-scale nan"]),
    ({"cfg_scale": 101.0}, ["--cfg-scale 101.0"]),
    ({"cfg_scale": True}, ["--cfg-scale True"]),
    ({"cfg_forecast": "both"}, ["--cfg-forecast 'both'", "guided or branches"]),
    ({"steps": 10, "method": "fora", "schedule": (1, 5)}, ["step 0"]),
    ({"steps": 10, "method": "fora", "schedule": (0, 5), "full_steps": 3}, ["--full-steps is 3", "2 computed steps"]),
    ({"steps": 10, "method": "full", "schedule": (0, 5)}, ["--method full", "drop --schedule"]),
    ({"steps": 10, "method": "fora", "schedule": (0, 5, 3)}, ["increasing order", "3 comes after 5"]),
    ({"steps": 10, "method": "fora", "schedule": (0, 5, 5)}, ["[5] appear more than once"]),
    ({"steps": 10, "method": "l2p", "schedule": (0, 5, 10)}, ["[10] are outside [0, 9]"]),
])
def test_refusals(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(InputError) as e:
        RunSettings(**kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_schedule_sets_the_full_steps() -> None:
    s = RunSettings(steps=10, method="taylorseer2", schedule=[0, 3, 7])
    assert s.schedule == (0, 3, 7) and s.full_steps == 3
    assert s == RunSettings(steps=10, method="taylorseer2", schedule=(0, 3, 7), full_steps=3)  # hashable key
    # an l2p predictor may be asked for its schedule (checked against the predictor when it is loaded)
    assert RunSettings(steps=10, method="l2p:x", schedule=(0, 2, 4)).full_steps == 3


def test_every_preset_parses() -> None:
    for name in PRESETS:
        assert Method.parse(name) == Method("preset", name)
    assert Method.parse("l2p") == Method("l2p", "default") and str(Method.parse("l2p:x-1")) == "l2p:x-1"


def test_check_count() -> None:
    assert check_count(np.int32(4), "n", 1, 4) == 4
    for bad, words in ((0, "n 0 is out of range; use an integer in 1..4"), (5, "n 5 is out of range"),
                       (np.bool_(True), "not an integer"), ("3", "not an integer")):
        with pytest.raises(InputError, match=words):
            check_count(bad, "n", 1, 4)
    with pytest.raises(InputError, match=r"use an integer >= 2 \(why\)"):
        check_count(1, "n", 2, note=" (why)")


def test_guidance_is_a_run_setting(flux_bundle, flux_cond) -> None:  # type: ignore[no-untyped-def]
    """A run's guidance reaches the FLUX guidance embedding whatever the sampler was opened with."""
    from l2p.sampling.pipeline import Sampler

    s = Sampler(flux_bundle)  # opened with 3.5
    five = s.run(flux_cond, RunSettings(steps=3, guidance=5.0), decode=False).final
    assert np.array_equal(five, Sampler(flux_bundle, guidance_scale=5.0).sample(flux_cond, 0, 3, decode=False).final)
    assert not np.allclose(five, s.sample(flux_cond, 0, 3, decode=False).final, atol=1e-6)
