"""The Dagster UI as a person sees it (issue 11): a real Chromium on the real ``dg dev`` of ``conftest.py``.

The daemon's sensor materializes the three samples and fails the broken task; then the browser opens the pages a
person would and asserts on what is rendered and visible: the ``selection_ready`` check passing for each sample's
partition, the overview table of ``aistock_bundle`` as an HTML table of the sample's factors, and the broken
task's typed reason (code and message) in its run's log, opened from its partition ("View logs") and on its run
page, above the fold of "View full message". "Visible" means the text's own box is on screen and is the topmost
element at its centre (not clipped, not covered).

Debian's Chromium drives the pages (Playwright's own browser downloads are never used); without it the test is
skipped. Each page is kept as a screenshot under the test's tmp dir (``pytest -s`` prints the paths).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from rd_assets.core.samples import SAMPLE_TASKS
from rd_assets.core.session.index import SnapshotIndex
from rd_assets.core.session.task_reader import read_task
from rd_assets_tests.conftest import expected_for
from rd_assets_tests.defs.conftest import BROKEN_TASK, DEV_TASKS
from rd_assets_tests.dg_dev_testkit import DgDev

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # without these Chromium calls out to Google's services, which this closed network refuses
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUNS_DEADLINE_S = 100
UI_TIMEOUT_MS = 20_000
FACTORS_HEADER = ["factor", "IC", "annualized return", "hist index", "code file"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason=f"no browser: {CHROMIUM} is missing (CI installs Debian's chromium)"
)

SEEN_JS = """(root, text) => {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (let at = node.data.indexOf(text); at >= 0; at = node.data.indexOf(text, at + 1)) {
      const range = document.createRange();
      range.setStart(node, at);
      range.setEnd(node, at + text.length);
      const boxes = [...range.getClientRects()].filter(r => r.width > 0 && r.height > 0);
      const owner = node.parentElement;
      const shown = boxes.length > 0 && boxes.every(r => {
        const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
        return hit !== null && (hit === owner || owner.contains(hit));
      });
      if (shown) return true;
    }
  }
  return false;
}"""


def seen(root: Locator, text: str) -> bool:
    """True when ``text`` is rendered in ``root`` where a person sees it: on screen, neither clipped nor covered."""
    return root.count() > 0 and root.first.evaluate(SEEN_JS, text)


def expect_seen(root: Locator, text: str) -> None:
    """Wait until a person would see ``text`` in ``root`` (scrolled into view)."""
    root.first.evaluate("e => e.scrollIntoView({block: 'nearest', inline: 'nearest'})")
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while not seen(root.first, text):
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} is not visible in {root}; it renders as: {root.first.inner_text()[:2000]!r}")
        time.sleep(0.2)


def keep(page: Page, tmp_path: Path, name: str) -> Path:
    page.mouse.move(0, 0)  # no tooltip over what the screenshot shows
    path = tmp_path / f"{name}.png"
    page.screenshot(path=path)
    print(f"screenshot: {path}")
    return path


@pytest.fixture(scope="module")
def runs(dg_dev: DgDev) -> dict[str, tuple[str, str]]:
    """The sensor's runs of every task, finished; the UI's first-visit survey is marked seen, as after one click."""
    finished = dg_dev.finished_runs(set(DEV_TASKS), time.monotonic() + RUNS_DEADLINE_S)
    assert dg_dev.gql("mutation { setNuxSeen }") == {"setNuxSeen": True}
    return finished


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, runs: dict[str, tuple[str, str]]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


def metadata_value(page: Page, label: str) -> Locator:
    """The value cell of a metadata row, as the UI lays out an event's metadata (label cell, value cell)."""
    row = page.locator("tr").filter(has=page.locator("td:first-child", has_text=label))
    return row.locator("td").nth(1)


@pytest.mark.parametrize("task", SAMPLE_TASKS)
def test_ready_task_shows_selection_ready_passing(
    page: Page, dg_dev: DgDev, runs: dict[str, tuple[str, str]], task: str, tmp_path: Path
) -> None:
    assert runs[task][1] == "SUCCESS"
    page.goto(f"{dg_dev.url}/assets/aistock_bundle?view=checks&checkDetail=selection_ready")
    check_tabs = page.get_by_role("tablist").filter(has=page.get_by_role("tab", name="Execution history"))
    check_tabs.get_by_role("tab", name="Partitions").click()
    page.get_by_title(task).last.click()  # the partition's row in the list (the first is its chip in the picker)
    detail = page.locator("div").filter(has_text="Latest execution").filter(has_text=task).last
    expect(detail).to_be_visible()
    expect_seen(detail, task)
    expect(detail.get_by_text("Passed", exact=True)).to_be_visible()
    expect_seen(detail, "Passed")
    value = metadata_value(page, "selection_ready")
    expect(value).to_have_text("true")
    expect_seen(value, "true")
    keep(page, tmp_path, f"selection_ready-{task}")


@pytest.mark.parametrize("task", SAMPLE_TASKS)
def test_overview_table_renders_the_factors(page: Page, dg_dev: DgDev, task: str, tmp_path: Path) -> None:
    page.goto(f"{dg_dev.url}/assets/aistock_bundle?view=partitions&partition={task}")
    expect(page.get_by_text("Materialized", exact=True).last).to_be_visible()
    table = metadata_value(page, "factors_table").locator("table")
    expect(table).to_be_visible()
    assert table.locator("thead th").all_inner_texts() == FACTORS_HEADER
    names = expected_for(task)["sota_factor_names"]
    assert table.locator("tbody tr td:first-child").all_inner_texts() == names
    for name in names:
        expect_seen(table, name)
    keep(page, tmp_path, f"overview-{task}")


def expect_reason_in_failure_rows(page: Page, reason: str, code: str, tmp_path: Path, where: str) -> None:
    """The run's log (a page or a dialog) shows ``reason`` in its failure rows, above any "View full message"."""
    for event in ("STEP_FAILURE", "RUN_FAILURE"):
        row = page.locator("[data-index]").filter(has=page.get_by_text(event, exact=True)).filter(has_text=reason)
        expect(row.first).to_be_attached()
        expect_seen(row, reason)
        more = row.first.get_by_text("View full message")
        if more.count():  # a long message is collapsed below its first lines; the reason must sit above the fold
            reason_box = row.first.get_by_text(reason).first.bounding_box()
            more_box = more.bounding_box()
            assert reason_box is not None and more_box is not None
            assert reason_box["y"] + reason_box["height"] <= more_box["y"]
        if event == "STEP_FAILURE":  # the failure's metadata names the code on its own
            expect_seen(row.locator("tr").filter(has=page.locator("td:first-child", has_text="error_code")), code)
        keep(page, tmp_path, f"{where}-{event}")


def test_broken_task_shows_its_typed_reason(
    page: Page, dg_dev: DgDev, runs: dict[str, tuple[str, str]], tmp_path: Path
) -> None:
    run_id, status = runs[BROKEN_TASK]
    assert status == "FAILURE"
    error = read_task(dg_dev.log_root / BROKEN_TASK, index=SnapshotIndex(None)).error
    assert error is not None and error.code == "no_sota_factor_experiment"
    reason = f"{error.code}: {error.message}"

    page.goto(f"{dg_dev.url}/assets/aistock_bundle?view=partitions&partition={BROKEN_TASK}")
    alert = page.get_by_text("failed, and did not materialize this asset.")
    expect(alert).to_have_text(f"Run {run_id[:8]} failed, and did not materialize this asset.")
    expect_seen(alert, "failed, and did not materialize this asset.")
    keep(page, tmp_path, "broken-partition")

    page.get_by_role("button", name="View logs").click()  # the run's log in a dialog on the partition page
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect_reason_in_failure_rows(page, reason, error.code, tmp_path, "broken-partition-logs")
    dialog.get_by_role("button", name="Done").click()

    alert.get_by_role("link", name=run_id[:8]).click()
    page.wait_for_url(f"**/runs/{run_id}")
    expect_reason_in_failure_rows(page, reason, error.code, tmp_path, "broken-run")
