"""l2p's TaylorSeer presets against diffusers' own TaylorSeer cache (``diffusers.hooks.taylorseer_cache``),
an independent implementation of the published rule, on uneven gaps.

The hook is applied to an identity module fed a random trajectory, so what it returns on a
skipped step is its forecast of the feature; l2p's coefficient table applied to the same
trajectory must give the same numbers (float64), and the hook's computed steps must be
:func:`~l2p.predictor.schedule.taylorseer_cache_schedule`.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
hooks = pytest.importorskip("diffusers.hooks.taylorseer_cache")

from diffusers.models.cache_utils import CacheMixin  # noqa: E402

from l2p.predictor.presets import preset  # noqa: E402
from l2p.predictor.schedule import taylorseer_cache_schedule  # noqa: E402


class Recorder(torch.nn.Module):
    """Returns its input and counts the calls that really run (the hook skips them on forecast steps)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x.clone()


class Net(torch.nn.Module, CacheMixin):
    """``proj`` returns its input: the hooked module's output on step i is the trajectory's F(i)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = Recorder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _table_forecast(name: str, schedule: tuple[int, ...], feats: np.ndarray) -> dict[int, np.ndarray]:
    """Forecasts of l2p's preset table on every skipped step: sum_j W[i, j] F(s_j), newest first."""
    n = len(feats)
    t = preset(name, schedule, n)
    out = {}
    for i in range(n):
        if i not in schedule:
            hist = [s for s in schedule if s < i][::-1][: t.K]
            out[i] = sum(t.W[i, j] * feats[s] for j, s in enumerate(hist))
    return out


@pytest.mark.parametrize("order, name", [(1, "taylorseer1"), (2, "taylorseer2"), (2, "taylorseer2-code"),
                                         (3, "taylorseer3")])
@pytest.mark.parametrize("steps, interval, before", [(50, 7, 3), (30, 4, 2), (28, 5, 1), (20, 3, 4)])
def test_hook_matches_preset(order: int, name: str, steps: int, interval: int, before: int) -> None:
    """diffusers' hook (warm-up, then a gap of 2, then `interval`: uneven gaps) vs. the preset table."""
    feats = np.random.default_rng(steps + interval).standard_normal((steps, 3, 4))  # (N, ...) float64
    net = Net()
    cfg = hooks.TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=before, max_order=order,
                                      taylor_factors_dtype=torch.float64, cache_identifiers=["proj"])
    hooks.apply_taylorseer_cache(net, cfg)
    computed, got = [], {}
    for i in range(steps):
        before_calls = net.proj.calls
        with net.cache_context("cond", step_index=i):
            y = net(torch.from_numpy(feats[i])).numpy()
        if net.proj.calls > before_calls:
            np.testing.assert_array_equal(y, feats[i])
            computed.append(i)
        else:
            got[i] = y
    schedule = taylorseer_cache_schedule(steps, interval, before)
    assert tuple(computed) == schedule
    gaps = np.diff(schedule)
    assert len(set(gaps.tolist())) > 1  # the gaps are uneven
    want = _table_forecast(name, schedule, feats)
    assert sorted(want) == sorted(got)
    for i in got:
        np.testing.assert_allclose(want[i], got[i], rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("order, name", [(1, "taylorseer1"), (2, "taylorseer2"), (3, "taylorseer3")])
def test_state_matches_preset_on_irregular_schedule(order: int, name: str) -> None:
    """diffusers' TaylorSeerState driven over an arbitrary schedule (gaps 1, 2, 5, 1, 3, 7, ...)."""
    schedule = (0, 1, 3, 8, 9, 12, 19, 21, 30)
    steps = 34
    feats = np.random.default_rng(7).standard_normal((steps, 5))
    state = hooks.TaylorSeerState(taylor_factors_dtype=torch.float64, max_order=order)
    want = _table_forecast(name, schedule, feats)
    for i in range(steps):
        state.current_step = i
        if i in schedule:
            state.update((torch.from_numpy(feats[i]),))
        else:
            np.testing.assert_allclose(want[i], state.predict()[0].numpy(), rtol=1e-11, atol=1e-11)


def test_meangap_differs_from_diffusers_on_uneven_gaps() -> None:
    """The mean-gap variant is not the published rule: on the diffusers schedule it forecasts differently."""
    schedule = taylorseer_cache_schedule(50, 7, 3)
    feats = np.random.default_rng(3).standard_normal((50, 4))
    a, b = _table_forecast("taylorseer2", schedule, feats), _table_forecast("taylorseer2-meangap", schedule, feats)
    assert any(not np.allclose(a[i], b[i]) for i in a)
