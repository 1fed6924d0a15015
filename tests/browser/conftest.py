"""Real-browser tests: Playwright for Python driving Debian's Chromium (never `playwright install`)
against a live server, with a real Celery worker where jobs must run."""

import os
import re
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.factories import PASSWORD

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make around
# it are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"

pytestmark = pytest.mark.browser


DESKTOP_VIEWPORT = {"width": 1440, "height": 900}
PHONE_VIEWPORT = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import expect, sync_playwright

    # A 2-core CI machine also runs the worker and the servers: give assertions time to settle.
    expect.set_options(timeout=15_000)

    if not Path(CHROMIUM).exists():
        if settings.CI:
            raise RuntimeError(f"CI=true and {CHROMIUM} is missing: .ci/run installs Debian's chromium.")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class _RequestsInFlight:
    """Counts the live server's requests being handled. The test's teardown flushes the database, and a request
    still in flight (an htmx poll that the closed page sent last) holding a row lock deadlocks that flush."""

    def __init__(self, httpd) -> None:
        self.count = 0
        self.lock = threading.Lock()
        handle = httpd.process_request_thread

        def counted(request, client_address) -> None:
            with self.lock:
                self.count += 1
            try:
                handle(request, client_address)
            finally:
                with self.lock:
                    self.count -= 1

        httpd.process_request_thread = counted

    def wait_idle(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture(scope="session")
def requests_in_flight(live_server) -> _RequestsInFlight:
    return _RequestsInFlight(live_server.thread.httpd)


@pytest.fixture
def page(browser, live_server, requests_in_flight):
    """A fresh browser page on the live server; the test fails on any uncaught error in the page's JavaScript."""
    context = browser.new_context(base_url=live_server.url, viewport=DESKTOP_VIEWPORT)
    context.set_default_timeout(15_000)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    yield page
    context.close()
    requests_in_flight.wait_idle()
    assert not script_errors, script_errors


@pytest.fixture
def sign_in(page):
    """sign_in(user) signs the browser in through the real sign-in form."""

    def do(user) -> None:
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(user.username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(re.compile(r"^(?!.*accounts/login).*$"))

    return do


@pytest.fixture
def screenshot(page):
    """screenshot(name) saves var/screenshots/<name>.png (1440x900) and <name>-phone.png (390x844), whole page."""

    def take(name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        # The same page on a phone, then back to the desktop size the test goes on with.
        desktop = page.viewport_size
        page.set_viewport_size(PHONE_VIEWPORT)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=True)
        page.set_viewport_size(desktop)
        return path

    return take
