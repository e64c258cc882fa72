"""Turning message bodies into events; whatever cannot be parsed is a `PoisonMessage`."""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError

from common.errors import PoisonMessage
from common.events import Event

E = TypeVar("E", bound=Event)


def parse_event(model: type[E], body: bytes) -> E:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors(include_url=False)[:5]
        )
        raise PoisonMessage(f"not a valid {model.__name__}: {problems}") from exc
