"""The README's settings table names every setting (it is generated from them)."""

from __future__ import annotations

from pathlib import Path

from common.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_lists_every_setting() -> None:
    text = README.read_text()
    missing = [
        f"ORC_{name.upper()}"
        for name in Settings.model_fields
        if f"`ORC_{name.upper()}`" not in text
    ]
    assert not missing, f"README settings table lacks {missing}"
