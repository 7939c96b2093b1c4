"""The pages in a real headless Chromium: upload with JavaScript off, land on the job page,
watch it refresh itself to done. Screenshots go to test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, FilePayload, Page, expect

from tests import samples
from tests.helpers import ROOT, Server, running, wait_until

pytestmark = pytest.mark.browser

ARTIFACTS = ROOT / "test-artifacts"
XSS_NAME = "<img src=x onerror=alert(1)>.png"


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
    expect(page.get_by_role("heading", name="Upload files")).to_be_visible()
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
    hostile = FilePayload(name=XSS_NAME, mimeType="image/png", buffer=b"x")
    page.set_input_files("#file", files=[hostile])
    page.get_by_role("button", name="Upload").click()
    row = page.locator("li.upload-row")
    expect(row.locator(".name")).to_have_text(XSS_NAME)  # in the live row, as text
    row.get_by_role("link", name="job page").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(XSS_NAME)  # and on its page
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == []
    context.close()


def test_pages_send_a_content_security_policy_without_inline_script(server: Server) -> None:
    response = httpx.get(f"{server.url}/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "<script>" not in response.text


@pytest.fixture
def page_js(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


def test_several_files_upload_with_progress_and_finish_without_a_reload(
    server: Server, page_js: Page, tmp_path: Path
) -> None:
    page = page_js
    page.goto(f"{server.url}/")
    page.evaluate("window.__same_page = true")
    png = samples.png(tmp_path / "photo.png")
    page.set_input_files(
        "#file",
        files=[
            FilePayload(name="photo.png", mimeType="image/png", buffer=png.read_bytes()),
            FilePayload(name="notes.txt", mimeType="text/plain", buffer=b"some words here\n"),
        ],
    )
    page.get_by_role("button", name="Upload").click()
    rows = page.locator("li.upload-row")
    expect(rows).to_have_count(2)
    for index in range(2):
        expect(rows.nth(index)).to_have_attribute("data-status", "done", timeout=30_000)
        assert rows.nth(index).locator("progress").evaluate("el => el.value") == 1
    expect(rows.nth(0).locator("img.row-thumb")).to_be_visible()
    assert page.evaluate("window.__same_page") is True  # no reload happened
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "upload-page-live.png", full_page=True)


def test_dropped_files_become_jobs(server: Server, page_js: Page) -> None:
    page = page_js
    page.goto(f"{server.url}/")
    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(["dropped text"], "dropped.txt", {type: "text/plain"}));
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        }"""
    )
    row = page.locator("li.upload-row")
    expect(row).to_have_attribute("data-status", "done", timeout=30_000)
    expect(row.locator(".name")).to_have_text("dropped.txt")


def test_cancel_mid_upload_leaves_nothing_on_the_server(
    server: Server, page_js: Page, tmp_path: Path
) -> None:
    page = page_js
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 200_000},
    )
    page.goto(f"{server.url}/")
    page.set_input_files(
        "#file",
        files=[
            FilePayload(
                name="big.bin", mimeType="application/octet-stream", buffer=b"\x09" * (8 << 20)
            )
        ],
    )
    page.get_by_role("button", name="Upload").click()
    row = page.locator("li.upload-row")
    bar = row.locator("progress")
    wait_until(lambda: bar.evaluate("el => el.value"), lambda value: value > 0.05, timeout_s=30)
    row.get_by_role("button", name="Cancel").click()
    expect(row.locator(".info")).to_have_text("Cancelled")
    wait_until(server.leftovers, lambda left: left == [], timeout_s=20)


def test_too_large_file_gets_a_message_a_person_understands(
    small_server: Server, page_js: Page
) -> None:
    page = page_js
    page.goto(f"{small_server.url}/")
    big = FilePayload(
        name="huge.bin", mimeType="application/octet-stream", buffer=b"\0" * (2 << 20)
    )
    page.set_input_files("#file", files=[big])
    page.get_by_role("button", name="Upload").click()  # refused before sending: limit shown
    expect(page.locator("li.upload-row .info").first).to_contain_text(
        "larger than the server accepts"
    )
    # And when the page's check is bypassed, the server's 413 reads the same way.
    page.evaluate("document.getElementById('upload-form').dataset.maxBytes = String(1 << 30)")
    page.set_input_files("#file", files=[big])
    page.get_by_role("button", name="Upload").click()
    second = page.locator("li.upload-row .info").nth(1)
    expect(second).to_contain_text("larger than the server accepts", timeout=20_000)
    expect(second).to_contain_text("HOPPER_MAX_UPLOAD_BYTES")


def test_job_page_follows_a_running_job_and_shows_the_result(
    server: Server, page_js: Page, tmp_path: Path
) -> None:
    path = tmp_path / "heavy.bin"
    path.write_bytes(b"\x06" * (48 << 20))
    job = httpx.post(
        f"{server.url}/uploads?processors=checksums",
        files={"file": ("heavy.bin", path.read_bytes())},
    ).json()
    page = page_js
    page.goto(f"{server.url}/jobs/{job['id']}")
    expect(page.locator("#job-status")).to_have_text("done", timeout=60_000)
    expect(page.get_by_role("heading", name="checksums")).to_be_visible()
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.screenshot(path=ARTIFACTS / "job-page-phone.png", full_page=True)


def test_jobs_page_lists_recent_jobs(server: Server, page_js: Page) -> None:
    page_js.goto(f"{server.url}/jobs")
    expect(page_js.get_by_role("heading", name="Recent jobs")).to_be_visible()
    assert page_js.locator("table.jobs tbody tr").count() >= 1
    page_js.screenshot(path=ARTIFACTS / "jobs-page.png", full_page=True)


def test_csv_columns_and_archive_entries_render_as_tables(
    server: Server, page_no_js: Page, tmp_path: Path
) -> None:
    csv_path = samples.csv_file(tmp_path / "t.csv", "name,count\n<b>x</b>,1\ny,2\n")
    zip_path = samples.zip_archive(tmp_path / "z.zip", {"a.txt": b"1", "<i>b</i>.txt": b"22"})
    for path, processor, cell in [
        (csv_path, "csv", "count"),
        (zip_path, "archive", "<i>b</i>.txt"),
    ]:
        job = httpx.post(f"{server.url}/uploads", files={"file": (path.name, path.read_bytes())})
        done = server.wait_finished(job.json()["id"])
        assert processor in done["result"], done
        page_no_js.goto(f"{server.url}/jobs/{done['id']}")
        table = page_no_js.locator("section.result", has_text=processor).locator("table.records")
        expect(table.get_by_role("cell", name=cell, exact=True)).to_be_visible()
    assert page_no_js.locator("b, i").count() == 0  # names are text, never markup


def test_the_cancel_button_works_without_javascript(
    tmp_path: Path, plugins_path: Path, page_no_js: Page
) -> None:
    page = page_no_js
    with running(tmp_path / "data", PYTHONPATH=str(plugins_path)) as server:
        response = httpx.post(
            f"{server.url}/uploads?processors=ticker",
            files={"file": ("long.txt", b"60", "text/plain")},
        )
        job_id = response.json()["id"]
        wait_until(lambda: server.status(job_id), lambda j: j["status"] == "processing")
        page.goto(f"{server.url}/jobs/{job_id}")
        page.get_by_role("button", name="Cancel job").click()
        page.wait_for_url(f"**/jobs/{job_id}")
        expect(page.locator(".status strong")).to_have_text("cancelled", timeout=20_000)
        expect(page.get_by_text("Cancelled at the client's request.")).to_be_visible()
        expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
