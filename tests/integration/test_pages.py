"""The pages in a real headless Chromium: upload with JavaScript off, land on the job page,
watch it refresh itself to done. Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, FilePayload, Page, expect, sync_playwright

from tests.helpers import ROOT, Server

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
XSS_NAME = "<img src=x onerror=alert(1)>.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: the test set-up installs Debian's chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page_no_js(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    yield page
    context.close()


def test_upload_form_without_javascript_lands_on_a_job_page_that_finishes(
    server: Server, page_no_js: Page
) -> None:
    page = page_no_js
    page.goto(f"{server.url}/")
    expect(page.get_by_role("heading", name="Upload a file")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "upload-page.png", full_page=True)
    page.set_input_files(
        "#file", files=[FilePayload(name="notes.txt", mimeType="text/plain", buffer=b"hello\n")]
    )
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url("**/jobs/*")
    # The page refreshes itself (meta refresh, no script) until the job is finished.
    expect(page.locator(".status strong")).to_have_text("done", timeout=20_000)
    expect(page.get_by_text("text/plain").first).to_be_visible()
    page.screenshot(path=ARTIFACTS / "job-page.png", full_page=True)
    job_id = page.url.rsplit("/", 1)[1]
    assert server.status(job_id)["filename"] == "notes.txt"


def test_a_hostile_filename_is_shown_as_text_and_never_runs(
    server: Server, browser: Browser
) -> None:
    context = browser.new_context()
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto(f"{server.url}/")
    page.set_input_files(
        "#file", files=[FilePayload(name=XSS_NAME, mimeType="image/png", buffer=b"x")]
    )
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url("**/jobs/*")
    expect(page.get_by_role("heading", level=1)).to_have_text(XSS_NAME)
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == []
    context.close()


def test_pages_send_a_content_security_policy_without_inline_script(server: Server) -> None:
    response = httpx.get(f"{server.url}/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "<script>" not in response.text
