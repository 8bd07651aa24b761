"""Every robustness case not already covered elsewhere (see catalog.py; tools/robustness.py runs them all)."""

from __future__ import annotations

import pytest

from .catalog import Case, Ctx, Skip, all_cases


def _params() -> list[object]:
    return [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in all_cases()
            if not c.covered_by]


@pytest.mark.parametrize("case", _params())
def test_case(case: Case, ctx: Ctx) -> None:
    try:
        case.run(ctx)
    except Skip as e:
        pytest.skip(str(e))


def test_covered_cases_name_an_existing_test() -> None:
    from .catalog import REPO

    for c in all_cases():
        if c.covered_by:
            path, _, name = c.covered_by.partition("::")
            assert f"def {name}(" in (REPO / path).read_text(), c.covered_by
