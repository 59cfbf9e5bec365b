"""The Dagster UI in a real headless browser: the lineage graph, the subset's page and its plots.

Builds a small real store (the pipeline's own runs, recorded in a temporary instance), serves it
with `dagster-webserver` on 127.0.0.1 and drives Debian's chromium through selenium. Skips when
chromium, chromedriver or selenium is missing (`.ci/run` installs them).
"""

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from dagster import AssetKey, DagsterInstance  # noqa: E402

from conftest import make_resources, small_bbc  # noqa: E402
from curation_assets.definitions import defs  # noqa: E402
from curation_assets.pipeline import run_pipeline  # noqa: E402
from resources import CurationStore  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[1]
CONFIG = {
    "centroids": {"config": {"pilot_size": 20}},
    "subsets": {"config": {"budget_fraction": 0.25, "seed": 7}},
}
WAIT_S = 60

# Selectors (Dagster 1.13's UI): in the graph every asset is an SVG <foreignObject> (group boxes are
# foreignObject.group) whose first [data-tooltip] is its name row; every edge is an SVG <path>
# stroked with the lineage-edge colour, from the upstream box to the downstream one.
ASSET_BOXES = "svg foreignObject:not(.group)"
EDGE_PATHS = 'svg path[stroke="var(--color-lineage-edge)"]'


def _graph():
    """Expected asset names, groups and (upstream, downstream) edges, from the code location."""
    graph = defs.resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    assert all(len(k.path) == 1 for k in keys), "the graph shows the last path element only"
    names = {k.path[-1] for k in keys}
    groups = {graph.get(k).group_name for k in keys}
    edges = {(p.path[-1], k.path[-1]) for k in keys for p in graph.get(k).parent_keys}
    return names, groups, edges


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _non_loopback_ip() -> str | None:
    """This machine's outward IPv4 address (a UDP connect sends nothing), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.254.254.254", 1))
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (webserver + code server), then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the leader is gone: make sure its children are too
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A temp instance and store built by the real pipeline, served on 127.0.0.1:<free port>."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"{' and '.join(missing)} missing: apt-get install chromium chromium-driver (.ci/run does)")
    root = tmp_path_factory.mktemp("ui")
    home = root / "dagster_home"
    home.mkdir()
    # no telemetry, and no "join the community" dialog over the page
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nnux:\n  enabled: false\n")
    store = CurationStore(database_path=str(root / "db" / "curation.duckdb"))
    with DagsterInstance.from_config(str(home)) as instance:
        results = run_pipeline(instance, make_resources(store, small_bbc(per_shard=20, num_shards=2)), CONFIG,
                               log=lambda _: None, extras=False)
        assert results and all(r.success for r in results)
        meta = instance.get_latest_materialization_event(AssetKey("sensitivity_subset")).asset_materialization.metadata
    meta = {k: v.value for k, v in meta.items()}

    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "CURATION_DATABASE": str(store.db_path)}
    log = open(root / "webserver.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port),
         "-m", "curation_assets.definitions"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so teardown stops the code server too
        preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGTERM)],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dagster-webserver exited ({proc.returncode}):\n{(root / 'webserver.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no /server_info within 90 s:\n{(root / 'webserver.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield {"url": url, "port": port, "meta": meta, "log": root / "webserver.log"}
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1600,1200"):
        opts.add_argument(arg)
    # an explicit driver path: selenium-manager never looks for (or downloads) one
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path):
    """save(driver, name): a screenshot under tmp_path, copied to $CURATION_TEST_ARTIFACTS if set."""
    def save(driver, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        assert driver.save_screenshot(str(path)), f"screenshot {name} failed"
        if os.environ.get("CURATION_TEST_ARTIFACTS"):
            out = Path(os.environ["CURATION_TEST_ARTIFACTS"])
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, out / path.name)
        return path
    return save


def _viewport(driver, width: int, height: int, scale: float = 1.0) -> None:
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": scale, "mobile": False})


def _wait(driver, condition, what: str):
    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.25).until(condition)
    except TimeoutException:
        pytest.fail(f"timed out after {WAIT_S} s waiting for {what} at {driver.current_url}")


def _nearest_box(point, boxes, tolerance=12.0):
    """The name of the one box within `tolerance` SVG units of `point` (edges end just outside)."""
    x, y = point
    near = [name for name, (bx, by, bw, bh) in boxes.items()
            if math.hypot(max(bx - x, 0, x - bx - bw), max(by - y, 0, y - by - bh)) <= tolerance]
    return near[0] if len(near) == 1 else None


def _graph_in_page(driver) -> tuple[dict, list]:
    """{asset name: [x, y, width, height]} of each drawn box, and the `d` of each drawn edge."""
    return driver.execute_script(
        """const boxes = {};
        for (const fo of document.querySelectorAll(arguments[0])) {
          const name = fo.querySelector('[data-tooltip]');
          if (name) boxes[name.getAttribute('data-tooltip')] =
            ['x', 'y', 'width', 'height'].map(a => parseFloat(fo.getAttribute(a)));
        }
        return [boxes, [...document.querySelectorAll(arguments[1])].map(p => p.getAttribute('d'))];""",
        ASSET_BOXES, EDGE_PATHS)


def test_lineage_graph_shows_every_asset_and_edge(server, browser, shots):
    names, groups, edges = _graph()
    # A large CSS viewport rendered at half scale: the whole graph fits at full-detail zoom, so no
    # node is culled off-screen and no name is shortened.
    _viewport(browser, 3800, 5000, 0.5)
    expanded = ",".join(f"global@global:{g}" for g in sorted(groups))
    browser.get(f"{server['url']}/asset-groups?expanded={expanded}")
    _wait(browser, lambda d: names <= set(_graph_in_page(d)[0]) and len(_graph_in_page(d)[1]) >= len(edges),
          f"{len(names)} assets and {len(edges)} edges in the graph")
    shots(browser, "lineage_graph")
    boxes, paths = _graph_in_page(browser)
    assert set(boxes) == names

    # Each drawn edge joins the boxes of one real dependency, and every dependency is drawn.
    drawn = set()
    for d in paths:
        nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", d)]
        src, dst = _nearest_box(nums[:2], boxes), _nearest_box(nums[-2:], boxes)
        assert src and dst, f"edge {d} does not join two asset boxes"
        drawn.add((src, dst))
    assert drawn == edges, f"missing {edges - drawn}, unexpected {drawn - edges}"


def test_subset_page_shows_summary_and_plots(server, browser, shots):
    meta = server["meta"]
    _viewport(browser, 1600, 2400)
    browser.get(f"{server['url']}/assets/sensitivity_subset")
    drew = f"Drew {meta['budget']} of {meta['n_examples']} examples by sensitivity"
    _wait(browser, lambda d: drew in d.find_element(By.TAG_NAME, "body").text, f"the summary {drew!r}")
    shots(browser, "sensitivity_subset")

    # The plots are PNG data URIs inside markdown metadata: each opens in a dialog as an <img>.
    for key in ("weights", "cluster_shares"):
        link = _wait(browser, lambda d: d.find_elements(
            By.XPATH, f"//tr[td[1][normalize-space()='{key}']]//a[normalize-space()='[Show Markdown]']"),
            f"the {key} metadata row")[0]
        link.click()
        img = _wait(browser, lambda d: d.find_elements(  # enter-done: the fade-in has finished
            By.CSS_SELECTOR, ".bp5-overlay-enter-done [role=dialog] img[src^='data:image/png;base64,']"),
            f"the {key} plot")[0]
        _wait(browser, lambda d: img.get_property("complete"), f"the {key} plot to load")
        assert img.get_property("naturalWidth") > 100 and img.get_property("naturalHeight") > 100  # decoded
        assert img.get_attribute("src") in meta[key]  # the very PNG the asset recorded
        shots(browser, f"sensitivity_subset_{key}")
        browser.find_element(By.XPATH, "//*[@role='dialog']//button[normalize-space()='Close']").click()
        _wait(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "[role=dialog]"), "the dialog to close")


def test_webserver_listens_on_loopback_only(server):
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=5):
        pass
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with pytest.raises(OSError):
        socket.create_connection((ip, server["port"]), timeout=5).close()
