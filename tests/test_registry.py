from __future__ import annotations

import pytest

from tune_unlearn.registry import Registry, UnknownNameError


def test_unknown_name_lists_valid_names_and_suggests_the_closest() -> None:
    registry: Registry[int] = Registry("method")
    registry.register("graddiff")(1)
    registry.register("finetune")(2)
    with pytest.raises(UnknownNameError) as info:
        registry.get("gradiff")
    message = str(info.value)
    assert "valid: finetune, graddiff" in message
    assert "did you mean 'graddiff'?" in message
    assert isinstance(info.value, ValueError)  # so pydantic validators report it


def test_registering_a_different_entry_under_a_taken_name_fails() -> None:
    registry: Registry[int] = Registry("metric")
    registry.register("uis")(1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("uis")(2)
