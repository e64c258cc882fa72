"""The collector settings an engine process starts with (checked in a child process:
freezing the test process's heap would keep every test's garbage for good)."""

from __future__ import annotations

import json
import subprocess
import sys

from orc.gc_tuning import GEN0_THRESHOLD

PROBE = """
import gc, json
gc.set_threshold(700, 10, 10)
from orc.gc_tuning import tune_collector
tune_collector()
print(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_start_up_heap_is_frozen_and_young_collections_are_rarer() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    found = json.loads(out.stdout)
    assert found["threshold"] == [GEN0_THRESHOLD, 10, 10]
    assert found["frozen"] > 1000
