from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from common.errors import PathOutsideDataRoot, PermanentError
from plugins.paths import DataPath, ensure_inside


class Config(BaseModel):
    source: DataPath


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    return root


def validate(raw: object, root: Path | str) -> Config:
    return Config.model_validate({"source": raw}, context={"data_root": root})


def test_relative_path_resolves_against_the_root(root: Path) -> None:
    assert validate("sub/a.csv", root).source == root.resolve() / "sub" / "a.csv"


def test_absolute_path_inside_is_accepted(root: Path) -> None:
    assert validate(str(root / "a.csv"), root).source == root.resolve() / "a.csv"


def test_dotdot_that_stays_inside_is_accepted(root: Path) -> None:
    assert validate("sub/../a.csv", root).source == root.resolve() / "a.csv"


def test_root_given_as_text_is_accepted(root: Path) -> None:
    assert validate("a.csv", str(root)).source == root.resolve() / "a.csv"


@pytest.mark.parametrize("raw", ["../x", "sub/../../x", "/etc/passwd"])
def test_escapes_are_rejected_naming_the_field(root: Path, raw: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate(raw, root)
    (error,) = caught.value.errors()
    assert error["loc"] == ("source",)
    assert "outside" in error["msg"]


def test_absolute_path_in_a_sibling_with_the_same_prefix_is_rejected(root: Path) -> None:
    sibling = root.parent / "data-other" / "a.csv"
    with pytest.raises(ValidationError):
        validate(str(sibling), root)


def test_symlink_pointing_outside_is_rejected(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.csv"
    outside.write_text("x\n")
    (root / "link.csv").symlink_to(outside)
    with pytest.raises(ValidationError):
        validate("link.csv", root)


def test_symlinked_folder_pointing_outside_is_rejected(root: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (root / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ValidationError):
        validate("linked/a.csv", root)


def test_symlink_pointing_inside_is_accepted_as_its_target(root: Path) -> None:
    target = root / "sub" / "real.csv"
    target.write_text("x\n")
    (root / "link.csv").symlink_to(target)
    assert validate("link.csv", root).source == target.resolve()


def test_symlinked_root_is_resolved_too(root: Path, tmp_path: Path) -> None:
    (tmp_path / "root-link").symlink_to(root, target_is_directory=True)
    assert validate("a.csv", tmp_path / "root-link").source == root.resolve() / "a.csv"


def test_without_data_root_in_the_context_validation_fails() -> None:
    with pytest.raises(ValidationError, match="data_root"):
        Config.model_validate({"source": "a.csv"})


def test_ensure_inside_returns_the_resolved_path(root: Path) -> None:
    assert ensure_inside("sub/../a.csv", root) == root.resolve() / "a.csv"


@pytest.mark.parametrize("path", ["../x", "/etc/passwd"])
def test_ensure_inside_raises_a_permanent_error(root: Path, path: str) -> None:
    with pytest.raises(PathOutsideDataRoot) as caught:
        ensure_inside(path, root)
    assert isinstance(caught.value, PermanentError)
    assert isinstance(caught.value, ValueError)


def test_ensure_inside_catches_a_symlink_swapped_after_validation(
    root: Path, tmp_path: Path
) -> None:
    config = validate("late.csv", root)
    (root / "late.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(PathOutsideDataRoot):
        ensure_inside(config.source, root)
