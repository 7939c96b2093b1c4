"""Browser login with HOPPER_AUTH=keys in a real headless Chromium: the form sets an
HttpOnly, SameSite=Strict cookie; pages and uploads work with it; another origin's form
post is refused even though (same site, other port) the browser sends the cookie."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, FilePayload, Page, expect

from tests.helpers import Server, free_port
from tests.keys import bearer, make_key

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def auth_server(
    tmp_path_factory: pytest.TempPathFactory, backend: str
) -> Iterator[tuple[Server, str]]:
    data = tmp_path_factory.mktemp("login") / "data"
    key = make_key(data, "browser")
    srv = Server(data_dir=data, env={"HOPPER_AUTH": "keys"}).start()
    yield srv, key
    srv.stop()


def _log_in(page: Page, server: Server, key: str, path: str) -> None:
    page.goto(f"{server.url}{path}")
    page.wait_for_url(f"**/login?next={path}")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{server.url}{path}")


def test_log_in_upload_with_the_page_and_see_the_job(
    auth_server: tuple[Server, str], browser: Browser
) -> None:
    server, key = auth_server
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{server.url}/login")
    page.get_by_label("API key").fill("hop_not_a_key")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or was revoked")

    _log_in(page, server, key, "/")
    cookie = next(c for c in context.cookies() if c["name"] == "hopper_key")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert page.evaluate("document.cookie") == ""  # no script can read the key

    # The page's own XHR upload and its event stream carry the cookie.
    page.set_input_files(
        "#file", files=[FilePayload(name="hi.txt", mimeType="text/plain", buffer=b"hi\n")]
    )
    page.get_by_role("button", name="Upload").click()
    row = page.locator("li.upload-row")
    expect(row).to_have_attribute("data-status", "done", timeout=30_000)
    row.get_by_role("link", name="job page").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("hi.txt")
    expect(page.locator("#job-status")).to_have_text("done")

    page.get_by_role("button", name="Log out").click()
    page.goto(f"{server.url}/jobs")
    page.wait_for_url("**/login?next=/jobs")
    context.close()


def test_the_form_post_without_javascript_works_with_the_cookie(
    auth_server: tuple[Server, str], browser: Browser
) -> None:
    server, key = auth_server
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    _log_in(page, server, key, "/")
    page.set_input_files(
        "#file", files=[FilePayload(name="plain.txt", mimeType="text/plain", buffer=b"x\n")]
    )
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url("**/jobs/*")
    expect(page.locator(".status strong")).to_have_text("done", timeout=20_000)
    context.close()


def test_a_cross_origin_form_post_is_refused(
    auth_server: tuple[Server, str], browser: Browser, tmp_path: Path
) -> None:
    server, key = auth_server
    before = _job_count(server, key)
    (tmp_path / "attack.html").write_text(
        f'<form id="f" action="{server.url}/uploads" method="post" '
        'enctype="multipart/form-data"><input type="hidden" name="file" value="x">'
        '<button type="submit">Win a prize</button></form>'
    )
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    attacker = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=attacker.serve_forever, daemon=True).start()
    context = browser.new_context()
    page = context.new_page()
    try:
        _log_in(page, server, key, "/")
        page.goto(f"http://127.0.0.1:{attacker.server_port}/attack.html")
        with page.expect_response(f"{server.url}/uploads") as answer:
            page.get_by_role("button", name="Win a prize").click()
        # 403, not 401: the cookie was sent (same site), and the Origin check refused it.
        assert answer.value.status == 403
        assert "did not come from a Hopper page" in answer.value.text()
    finally:
        context.close()
        attacker.shutdown()
        attacker.server_close()
    assert _job_count(server, key) == before


def test_cookie_posts_need_a_matching_origin_and_header_keys_do_not(
    auth_server: tuple[Server, str],
) -> None:
    server, key = auth_server
    files = {"file": ("a.txt", b"a", "text/plain")}
    cookies = {"hopper_key": key}
    host = server.url.removeprefix("http://")

    def post(headers: dict[str, str], with_cookie: bool = True) -> int:
        client = httpx.Client(cookies=cookies if with_cookie else None)
        with client:
            return client.post(f"{server.url}/uploads", files=files, headers=headers).status_code

    assert post({"Origin": "http://evil.example"}) == 403
    assert post({}) == 403  # neither Origin nor Referer
    assert post({"Referer": "http://evil.example/page"}) == 403
    assert post({"Origin": f"http://{host}"}) == 202
    assert post({"Referer": f"http://{host}/"}) == 202
    assert post(bearer(key), with_cookie=False) == 202  # a header key is not a browser's


def _job_count(server: Server, key: str) -> int:
    response = httpx.get(
        f"{server.url}/jobs", headers={**bearer(key), "Accept": "application/json"}
    )
    return len(response.json()["jobs"])
