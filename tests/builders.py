"""Events built for tests, with fresh ids where a test does not care which."""

from __future__ import annotations

import uuid
from typing import Any

from common.events import TaskDispatched
from common.states import TaskType


def extract_dispatch(
    plugin: str, config: dict[str, Any] | None = None, **fields: Any
) -> TaskDispatched:
    """The first attempt of an extract of a run of its own."""
    return TaskDispatched(
        task_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        job_definition_id=uuid.uuid4(),
        task_type=TaskType.EXTRACT,
        attempt=1,
        plugin=plugin,
        config=config or {},
        **fields,
    )
