"""The console end to end: `mshale-fl console` against a running system, driven in headless Chromium.

Chromium is Debian's (`/usr/bin/chromium`, installed by `./run test` when missing), driven by
playwright-python without playwright's own browser download.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from mshale_fl.console.page import BAR_WIDTH
from mshale_fl.console.server import CONTENT_SECURITY_POLICY
from mshale_fl.ledger.budgets import LOW_FRACTION

from .system import ConsoleProcess, System, build_audit_log, build_ledger, build_run, dead_letter_one, declare

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

CHROMIUM = os.environ.get("MSHALE_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 60_000
# Broker statistics trail the queues by a few seconds, and the first page load composes epsilon
# (imports torch): assertions retry, across the page's own reloads, up to this long.
expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() and shutil.which(CHROMIUM) is None:
        pytest.fail(f"no Chromium at {CHROMIUM}: `apt-get install chromium` (./run test does it) or set MSHALE_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def system(tmp_path: Path, vhost: str, broker_url: str) -> System:
    system = System(home=tmp_path / "mishale", broker_url=broker_url, vhost=vhost)
    system.home.mkdir()
    build_ledger(system.ledger_url)
    system.appender = build_audit_log(system)
    build_run(system.home, [{"eval_loss": 2.1, "update_norm": 0.9}, {"eval_loss": 1.6, "update_norm": 0.5},
                            {"eval_loss": 1.3, "update_norm": 0.4}])
    declare(system)
    return system


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


def _dead_letter_row(page: Page) -> object:
    return page.locator('tr.dead-letter-queue[data-queue="mshale.dead-letter"] td.count')


def test_console_shows_the_running_system(system: System, page: Page, tmp_path: Path) -> None:
    console = ConsoleProcess(system.env())
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        response = page.goto(console.url)
        assert response is not None and response.status == 200
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY

        # Partners with tiers and agreements.
        partners = page.locator("#partners tr.partner")
        expect(partners).to_have_count(4)
        expect(page.locator('#partners tr[data-partner-id="lab-one"] td.tier')).to_have_text("Tier 1")
        expect(page.locator('#partners tr[data-partner-id="lab-two"] td.tier')).to_have_text("Tier 2")
        expect(page.locator('#partners tr[data-partner-id="lab-two"] td.agreements')).to_contain_text("DPA")
        expect(page.locator('#partners tr[data-partner-id="lab-three"] td.agreements')).to_contain_text("TRAINING")
        expect(page.locator('#partners tr[data-partner-id="lab-one"] td.agreements')).to_have_text("none")

        # Privacy budgets, each bar with the 10 % pause line; lab-four has fallen below it and is paused.
        expect(page.locator("#budgets p.legend")).to_contain_text("10 % pause line")
        expect(page.locator("#budgets tr.budget")).to_have_count(2)
        expect(page.locator("#budgets .pause-line")).to_have_count(2)
        expect(page.locator("#budgets .pause-line").first).to_have_attribute("x1", f"{LOW_FRACTION * BAR_WIDTH:.1f}")
        expect(page.locator('#budgets tr[data-partner-id="lab-four"]')).to_have_attribute("data-state", "paused")
        expect(page.locator('#budgets tr[data-partner-id="lab-three"]')).to_have_attribute("data-state", "active")
        expect(page.locator('#budgets tr[data-partner-id="lab-four"] svg.budget-bar')).to_contain_text("10 %")

        # The latest signed checkpoint, its signature, and the full verification.
        assert system.appender is not None
        size = system.appender.checkpoint.size
        expect(page.locator("#audit .checkpoint-size")).to_have_text(str(size))
        expect(page.locator("#audit .checkpoint-status")).to_contain_text("signature valid")
        expect(page.locator('#audit .verification[data-ok="true"]')).to_contain_text(
            f"VERIFIED: {size} entries and 4 checkpoints verify up to size {size}"
        )

        # The loss plot: eval_loss over the three completed rounds; the run is in round 4 of 5.
        expect(page.locator("#training .plot-caption")).to_contain_text("eval_loss")
        expect(page.locator("#training svg.plot circle.point")).to_have_count(3)
        expect(page.locator("#training svg.plot polyline.series")).to_have_count(1)
        expect(page.locator("#training tr.run td.progress")).to_have_text("round 4 of 5 in progress or interrupted")

        # Dead letters: none yet; one rejected event shows up on a later automatic refresh.
        expect(_dead_letter_row(page)).to_have_text("0")
        dead_letter_one(system)
        expect(_dead_letter_row(page)).to_have_text("1")

        screenshot = tmp_path / "console.png"
        page.screenshot(path=str(screenshot), full_page=True)
        if os.environ.get("MSHALE_CONSOLE_SCREENSHOT"):
            shutil.copy(screenshot, os.environ["MSHALE_CONSOLE_SCREENSHOT"])

        # Nothing but the console itself was ever requested (no CDN, no font, no script).
        assert requested and all(url.startswith(console.url) for url in requested), requested

        # The JSON endpoint carries the same data.
        state = httpx.get(f"{console.url}api/state", timeout=30).json()
        assert [partner["id"] for partner in state["partners"]["partners"]] == [
            "lab-four", "lab-one", "lab-three", "lab-two"
        ]
        assert {budget["partner_id"]: budget["state"] for budget in state["budgets"]["budgets"]} == {
            "lab-three": "active", "lab-four": "paused"
        }
        assert state["budgets"]["pause_fraction"] == LOW_FRACTION
        assert state["audit"]["verification"]["ok"] and state["audit"]["latest_checkpoint"]["size"] == size
        assert [point["value"] for point in state["training"]["plot"]["points"]] == [2.1, 1.6, 1.3]
        dead = {queue["queue"]: queue["messages"] for queue in state["dead_letters"]["queues"]}
        assert dead["mshale.dead-letter"] == 1

        # Read-only: anything but GET/HEAD is refused.
        refused = httpx.post(console.url, content=b"x", timeout=30)
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
    finally:
        console.stop()
    assert console.process.returncode is not None


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_each_panel_says_what_is_wrong_when_its_source_is_down(system: System, page: Page) -> None:
    port = _closed_port()
    env = system.env()
    env["MSHALE_BROKER_MANAGEMENT_URL"] = f"http://127.0.0.1:{port}"
    env["MSHALE_LEDGER_URL"] = f"sqlite:///{system.home / 'elsewhere' / 'ledger.sqlite3'}"
    console = ConsoleProcess(env)
    try:
        page.goto(console.url)
        expect(page.locator("#dead-letters .unavailable")).to_contain_text(
            f"dead letters: RabbitMQ management API unreachable at http://127.0.0.1:{port}"
        )
        expect(page.locator("#partners .unavailable")).to_contain_text("partners: no ledger database at")
        expect(page.locator("#budgets .unavailable")).to_contain_text("privacy budgets: no ledger database at")
        # The panels whose sources are up still work.
        expect(page.locator("#audit .checkpoint-status")).to_contain_text("signature valid")
        expect(page.locator("#training svg.plot circle.point")).to_have_count(3)
    finally:
        console.stop()
