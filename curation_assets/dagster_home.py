"""A project-local Dagster home with telemetry off, so nothing is written to the user's home."""

import os
from pathlib import Path

DAGSTER_YAML = """\
# Written by curation_assets: a project-local instance with no telemetry.
telemetry:
  enabled: false
"""


def ensure_project_home(project_dir: str | os.PathLike = ".") -> Path:
    """Use $DAGSTER_HOME if set, else <project_dir>/.dagster_home; make sure dagster.yaml exists.

    Also keeps matplotlib's cache inside that home instead of ~/.cache.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or Path(project_dir).resolve() / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("MPLCONFIGDIR", str(home / "matplotlib"))
    return home
