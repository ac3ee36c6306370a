"""The admin in a real browser: Playwright driving the system's Chromium against a live
server and a real worker. Skipped, with the reason, on a machine without Chromium.

Screenshots go to /tmp/wc-*.png (looked at by a person when the layout changes)."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from executions.models import Execution
from executions.services.executions import execution_create
from tests.support.workflows import edge, make_workflow, node, wait_for

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RETRY = {"max_retries": 2, "backoff_seconds": 0.05, "max_backoff_seconds": 1, "jitter": False}

FINISHED = ".wc-times:not([data-status=pending]):not([data-status=running])"

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no browser: {CHROMIUM} is missing (make test installs it with apt-get)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (make install)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
    # between browser steps are ordinary synchronous ones.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser, live_server, admin_user):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/$"))
    page.console_errors = errors
    page.base = live_server.url
    yield page
    context.close()


def fits(page) -> bool:
    """No horizontal scrollbar: the document is no wider than the window, and no list's
    results box scrolls sideways inside it."""
    return page.evaluate(
        """() => document.documentElement.scrollWidth <= document.documentElement.clientWidth
            && Array.from(document.querySelectorAll('#changelist .results'))
                .every((el) => el.scrollWidth <= el.clientWidth)"""
    )


def widths(page) -> dict:
    """What overflows, for the failure message."""
    return page.evaluate(
        """() => ({doc: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
            results: Array.from(document.querySelectorAll('#changelist .results'))
                .map((el) => [el.scrollWidth, el.clientWidth])})"""
    )


def shot(page, name: str) -> None:
    page.screenshot(path=f"/tmp/wc-{name}.png", full_page=True)


def test_failure_summary_and_clicking_a_node(page, worker, admin_user):
    wf = make_workflow(
        admin_user,
        [
            node("start", name="Receive order"),
            node("fetch", "test_behave", config={"fail_attempts": 9}, retry=RETRY),
            node("after"),
        ],
        [edge("start", "fetch"), edge("fetch", "after")],
        name="orders",
    )
    execution = wait_for(execution_create(workflow=wf, input={"order": 42})[0].id)
    assert execution.status == "failed"
    page.goto(f"{page.base}/admin/executions/execution/{execution.id}/change/")
    summary = page.locator("#wc-summary")
    assert "planned failure on attempt 3" in summary.inner_text()
    assert "no error connection" not in summary.inner_text()
    row = page.locator("#node-fetch")
    assert row.get_attribute("open") is None
    assert not page.locator("#node-fetch .wc-input").is_visible()
    page.locator('g.node[data-node="fetch"]').click()
    page.wait_for_function("document.getElementById('node-fetch').open")
    assert page.locator("#node-fetch .wc-input").is_visible()
    assert '"order": 42' in page.locator("#node-fetch .wc-input").inner_text()
    assert "planned failure" in page.locator("#node-fetch .wc-output").inner_text()
    assert page.locator("#node-after .wc-status").inner_text() == "not reached"
    assert fits(page)
    shot(page, "failed-1280")
    page.emulate_media(color_scheme="dark")  # the admin follows the system's theme
    shot(page, "failed-dark")
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 1024, "height": 900})
    assert fits(page)
    shot(page, "failed-1024")
    assert page.console_errors == []


def test_run_button_and_live_refresh(page, worker, admin_user):
    wf = make_workflow(
        admin_user,
        [
            node("first", "test_behave", config={"sleep": 1.5}),
            node("second", "test_behave", config={"sleep": 1.5}),
        ],
        [edge("first", "second")],
        name="slow pair",
    )
    page.goto(f"{page.base}/admin/executions/workflow/{wf.id}/change/")
    assert fits(page)
    shot(page, "workflow-1280")
    page.fill("#wc-run-input", '{"k": 1}')
    page.click("#wc-run-button")
    page.wait_for_url(re.compile(r".*/admin/executions/execution/[0-9a-f-]{36}/change/$"))
    execution = Execution.objects.get(workflow=wf)
    assert execution.input == {"k": 1} and execution.trigger == "admin"
    # A mark that a reload would wipe: the page must update in place.
    page.evaluate("window.wcNoReload = true")
    page.wait_for_selector('#node-first[data-status="succeeded"]', timeout=60_000)
    shot(page, "running-1280")
    page.wait_for_selector('.wc-times[data-status="succeeded"]', timeout=60_000)
    assert page.evaluate("window.wcNoReload") is True
    assert page.locator('#node-second[data-status="succeeded"]').count() == 1
    # Finished: the buttons changed from Cancel to the retries, without a reload.
    assert page.locator("#wc-cancel").count() == 0
    assert page.locator("#wc-retry-start").count() == 1
    assert fits(page)
    assert page.console_errors == []


def test_retry_buttons(page, worker, admin_user):
    wf = make_workflow(
        admin_user,
        [
            node("first"),
            node("boom", "test_behave", config={"fail_attempts": 1}, retry={"max_retries": 0}),
        ],
        [edge("first", "boom")],
        name="flaky",
    )
    failed = wait_for(execution_create(workflow=wf, input={"n": 1})[0].id)
    page.goto(f"{page.base}/admin/executions/execution/{failed.id}/change/")
    page.click("#wc-retry-failed")
    page.wait_for_url(re.compile(r".*/admin/executions/execution/[0-9a-f-]{36}/change/$"))
    retry = Execution.objects.get(retry_of=failed)
    assert str(retry.id) in page.url
    # It runs boom again (its first attempt fails again: the test node counts attempts),
    # and the page follows it to the end without a reload.
    page.wait_for_selector(FINISHED, timeout=60_000)
    assert retry.node_runs.get(node="first").attempts == 0  # copied, not run again
    # Retry with new input, from the finished retry's page.
    page.click(".wc-new-input summary")
    page.fill("#wc-new-input", '{"n": 2}')
    page.click("#wc-retry-input")
    page.wait_for_url(re.compile(r".*/admin/executions/execution/[0-9a-f-]{36}/change/$"))
    newest = Execution.objects.get(retry_of=retry)
    assert newest.input == {"n": 2} and str(newest.id) in page.url
    page.wait_for_selector(FINISHED, timeout=60_000)
    assert page.console_errors == []


def test_lists_fit_1280(page, worker, admin_user):
    wf = make_workflow(admin_user, [node("a")], name="listed workflow with a long name " * 2)
    for _ in range(3):
        wait_for(execution_create(workflow=wf, input={})[0].id)
    for path, name in [
        ("/admin/executions/execution/", "executions"),
        ("/admin/executions/workflow/", "workflows"),
        (f"/admin/executions/workflow/{wf.id}/change/", "workflow-page"),
    ]:
        page.goto(page.base + path)
        shot(page, name)
        assert fits(page), (path, widths(page))
    assert page.console_errors == []


def test_skips_cleanly_without_a_browser():
    """The reason a machine without Chromium gives (kept honest: the path is the one used)."""
    assert CHROMIUM == shutil.which("chromium") or not os.path.exists(CHROMIUM)
