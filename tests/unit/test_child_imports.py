"""A job run in a child process (trygg/isolated.py: a registry upload, an admin edit)
starts with a fresh interpreter that imports the job's module. The `dashboard` and
`storage` packages import their names when first used, so that module does not bring
FastAPI, the app and the writers with it: ~1.2 s of CPU less before every admin edit."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Modules whose functions run in a child process.
JOB_MODULES = ["dashboard.admin_edits", "dashboard.registry_upload"]
#: What such a child must not import.
HEAVY = ["fastapi", "starlette", "uvicorn", "dashboard.app", "storage.local_log", "storage.embedded"]


@pytest.mark.parametrize("module", JOB_MODULES)
def test_a_child_job_module_imports_nothing_of_the_web_app(module: str) -> None:
    probe = f"import sys, {module}; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "", f"importing {module} also imported: {out.stdout.strip()}"


def test_the_packages_still_give_their_names() -> None:
    from dashboard import StageAlerts, create_app
    from storage import EventStore, migrate, save_registry

    assert callable(create_app) and callable(migrate) and callable(save_registry)
    assert StageAlerts.__name__ == "StageAlerts" and EventStore.__name__ == "EventStore"
