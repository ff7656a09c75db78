"""Reading the settings is the first thing every command does, and a bad one ends it with
one line (docs/operators.md): that must not wait for the numeric libraries to load."""

from __future__ import annotations

import subprocess
import sys


def test_the_settings_load_without_numpy() -> None:
    code = "import sys, trygg.settings; print(sorted(m for m in ('numpy', 'processors') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
