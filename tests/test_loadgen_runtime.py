"""Overlapping load runs share the interpreter settings: the last one out restores them."""

from __future__ import annotations

import gc
import sys

from tokenrace.loadgen import _tuned_runtime


def test_overlapping_runs_restore_settings_only_when_the_last_ends() -> None:
    before = (sys.getswitchinterval(), gc.isenabled())
    first = _tuned_runtime()
    second = _tuned_runtime()
    first.__enter__()
    assert sys.getswitchinterval() <= 0.0002 and not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)  # the first run ends while the second still measures
    assert sys.getswitchinterval() <= 0.0002 and not gc.isenabled()
    second.__exit__(None, None, None)
    assert (sys.getswitchinterval(), gc.isenabled()) == before
    assert gc.get_freeze_count() == 0
