"""One Dagster instance per store: its runs, event log and `shards` partition set.

Dynamic partitions live in the instance, so two stores sharing one instance overwrite each
other's shard sets (a run of one store deleted the partitions another store's run was using).
By default each store therefore gets its own instance home beside its database file,
`<folder>/.<database file name>.dagster/` (next to the `.<name>.views` marker folder), with
telemetry off. An explicit $DAGSTER_HOME is used as it is, and the instance remembers the store
it serves (`claim_instance`), so a second store is refused with one line instead of corrupting
the first.

On PostgreSQL (as deployed: `deploy/`), set CURATION_POSTGRES_URL (postgresql://user:pw@host:port/db):
the home's dagster.yaml then keeps runs, events and schedules in that database (dagster-postgres);
the URL is read from the environment at each start, never written to disk. Give each store its
own PostgreSQL database.
"""

import os
import tempfile
from pathlib import Path

MARKER = "# Written by curation_assets"
POSTGRES_ENV = "CURATION_POSTGRES_URL"
STORE_KEY = "curation/store"
# The run queue caps runs launched from the UI (a backfill over many shards): each run starts a
# process per step, and more than a few at once only thrash a small machine. `curate backfill`
# executes its runs directly (not through the queue) and caps them with --max-concurrent.
_BASE_YAML = f"""\
{MARKER}: one store's instance, no telemetry.
telemetry:
  enabled: false
# No "join the community" dialog: it covers the UI and its form would reach the network.
nux:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 4
"""
_POSTGRES_YAML = f"""\
storage:
  postgres:
    postgres_url:
      env: {POSTGRES_ENV}
"""


def dagster_yaml(environ=None) -> str:
    """The dagster.yaml this project writes: SQLite in the home, or PostgreSQL when configured."""
    environ = os.environ if environ is None else environ
    return _BASE_YAML + (_POSTGRES_YAML if (environ.get(POSTGRES_ENV) or "").strip() else "")


def default_home(database_path: str | os.PathLike) -> Path:
    db = Path(database_path).expanduser().resolve()
    return db.parent / f".{db.name}.dagster"


def ensure_store_home(database_path: str | os.PathLike) -> Path:
    """Use $DAGSTER_HOME if set, else the store's own home; make sure its dagster.yaml exists.

    A dagster.yaml this module wrote earlier is brought up to date (also when
    CURATION_POSTGRES_URL is set or unset); one a user wrote is left alone. Also keeps
    matplotlib's cache inside that home instead of ~/.cache.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or default_home(database_path))
    home.mkdir(parents=True, exist_ok=True)
    config, wanted = home / "dagster.yaml", dagster_yaml()
    if not config.exists() or (config.read_text().startswith(MARKER) and config.read_text() != wanted):
        tmp = config.with_name(f".dagster.yaml.{os.getpid()}.tmp")
        tmp.write_text(wanted)
        os.replace(tmp, config)  # several processes may start at once: never leave half a file
    os.environ["DAGSTER_HOME"] = str(home)
    keep_matplotlib_cache_out_of_home()
    return home


def keep_matplotlib_cache_out_of_home() -> None:
    """matplotlib writes its config and font cache at import: under the system's temporary folder,
    not ~/.cache and not the store (a refused run must leave no folder behind)."""
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), f"curation-matplotlib-{os.getuid()}"))


def claim_instance(instance, store) -> None:
    """Record that `instance` serves `store`; refuse (one line) if it serves another store whose
    database still exists. Its partition set and run history are that store's. An ephemeral
    (in-memory) instance is one process's own and is not claimed."""
    if instance.is_ephemeral:
        return
    mine = str(store.db_path)
    owner = instance.run_storage.get_cursor_values({STORE_KEY}).get(STORE_KEY)
    if owner and owner != mine and Path(owner).exists():
        where = os.environ.get("DAGSTER_HOME") or "this Dagster instance"
        raise ValueError(
            f"DAGSTER_HOME: the instance at {where} already serves the store {owner}; give {mine} its own "
            f"instance (unset DAGSTER_HOME: each store gets one beside its database) or its own PostgreSQL "
            "database")
    if owner != mine:
        instance.run_storage.set_cursor_values({STORE_KEY: mine})
