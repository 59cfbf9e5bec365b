"""A project-local Dagster home with telemetry off, so nothing is written to the user's home."""

import os
from pathlib import Path

MARKER = "# Written by curation_assets"
# The run queue caps runs launched from the UI (a backfill over many shards): each run starts a
# process per step, and more than a few at once only thrash a small machine. `curate backfill`
# executes its runs directly (not through the queue) and caps them with --max-concurrent.
DAGSTER_YAML = f"""\
{MARKER}: a project-local instance with no telemetry.
telemetry:
  enabled: false
# No "join the community" dialog: it covers the UI and its form would reach the network.
nux:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 4
"""


def ensure_project_home(project_dir: str | os.PathLike = ".") -> Path:
    """Use $DAGSTER_HOME if set, else <project_dir>/.dagster_home; make sure dagster.yaml exists.

    A dagster.yaml this module wrote earlier is brought up to date; one a user wrote is left alone.
    Also keeps matplotlib's cache inside that home instead of ~/.cache.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or Path(project_dir).resolve() / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or (config.read_text().startswith(MARKER) and config.read_text() != DAGSTER_YAML):
        tmp = config.with_name(f".dagster.yaml.{os.getpid()}.tmp")
        tmp.write_text(DAGSTER_YAML)
        os.replace(tmp, config)  # several processes may start at once: never leave half a file
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("MPLCONFIGDIR", str(home / "matplotlib"))
    return home
