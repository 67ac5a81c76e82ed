"""The README's "Bring your own model" example honours the family contract, as the built-in ones do."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from retrainer.models.testing import family_checks

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


ChurnLogReg = _load("churn_logreg").ChurnLogReg


@pytest.mark.parametrize(("name", "check"), list(family_checks(ChurnLogReg)), ids=lambda v: v if isinstance(v, str) else "")
def test_churn_logreg_honours_the_contract(name: str, check) -> None:
    check()
