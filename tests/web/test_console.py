"""The ua-server web console in a real browser (headless Debian chromium via Playwright).

The provider flow of the DNAnexus sharing FAQ, end to end against a live ``ua-server``: the
customer signs in, creates a project and a project-limited UPLOAD token with an expiry, ``ua``
(a real subprocess) uploads with that token while the project page shows the files arrive and
close, the customer revokes the token and the next ``ua`` run fails with exit 3. Plus sharing,
transfer, the file page, and the refusals: VIEW members, forged and CSRF-less POSTs, wrong tokens.

Screenshots of every page go to ``artifacts/screenshots/``.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}
MiB = 1024 * 1024

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (/usr/bin/chromium or "
                                                "`chromium` on PATH); Playwright's own browser "
                                                "download is not used"),
]


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def new_page(browser):
    """Pages in separate browser contexts (separate cookie jars = separate people)."""
    contexts = []

    def make():
        ctx = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        ctx.set_default_timeout(15000)
        contexts.append(ctx)
        return ctx.new_page()

    yield make
    for c in contexts:
        c.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def sign_in(page, server, token: str):
    page.goto(server.url + "/console/")
    assert page.url.endswith("/console/login")
    page.fill("#token", token)
    with page.expect_navigation():
        page.click("#sign-in")
    return page


def ua_env(server) -> dict:
    """Where the API server is, and nothing else: the token comes from --auth-token."""
    env = server.env()
    del env["DX_SECURITY_CONTEXT"], env["DX_PROJECT_CONTEXT_ID"]
    return env


def submit_forged_form(page, action: str, fields: dict) -> None:
    """A form built by script in the signed-in page and submitted (what a forged POST looks
    like to the server: the session cookie is sent, the fields are whatever the forger chose)."""
    with page.expect_navigation():
        page.evaluate("""([action, fields]) => {
            const f = document.createElement('form');
            f.method = 'post'; f.action = action;
            for (const [k, v] of Object.entries(fields)) {
                const i = document.createElement('input');
                i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
            }
            document.body.appendChild(f); f.submit();
        }""", [action, fields])


def csrf_of(page) -> str:
    return page.get_attribute("form[action='/console/logout'] input[name=csrf]", "value")


def row_states(page) -> dict[str, str]:
    return {r.get_attribute("data-name"): r.get_attribute("data-state")
            for r in page.query_selector_all("#files-body tr[data-file]")}


# --- the provider flow ------------------------------------------------------------------------

def test_provider_flow_token_upload_watch_revoke(make_server, new_page, run_ua, tmp_path):
    server = make_server(close_delay=4)
    page = new_page()

    # 1. sign in (the browser gets a session id, never the token)
    page.goto(server.url + "/console/")
    shot(page, "01-login")
    sign_in(page, server, server.admin_token)
    assert page.inner_text("#me") == "user-admin"
    [cookie] = [c for c in page.context.cookies() if c["name"] == "ua_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert server.admin_token not in cookie["value"]
    assert server.admin_token not in page.content()

    # 2. create a project for the customer's samples
    page.fill("#project-name", "run-42 samples")
    with page.expect_navigation():
        page.click("#new-project button[type=submit]")
    pid = page.inner_text("#project-id")
    assert re.fullmatch(r"project-[0-9A-Za-z]{24}", pid)
    assert page.inner_text("#my-level") == "ADMINISTER"

    # 3. an UPLOAD token limited to that project, with an expiry date; shown exactly once
    page.click("#token-button")
    assert page.input_value("#token-project") == pid
    page.select_option("#token-level", "UPLOAD")
    page.fill("#token-expires", "2099-12-31")
    page.fill("#token-label", "SeqLab run 42")
    with page.expect_navigation():
        page.click("#new-token-form button[type=submit]")
    token = page.inner_text("#new-token").strip()
    assert re.fullmatch(r"[A-Za-z0-9]{40}", token)
    row = page.locator("#token-table tr[data-status=active]", has_text="SeqLab run 42")
    assert "UPLOAD" in row.inner_text() and "2099-12-31 23:59" in row.inner_text()
    shot(page, "04-token-created")
    page.reload()
    assert page.locator("#new-token").count() == 0  # never shown again
    assert token not in page.content()

    # 4. the provider uploads with ua while the customer watches the project page
    data = tmp_path / "reads"
    data.mkdir()
    sizes = {"S1_R1.fastq.gz": 11 * MiB, "S1_R2.fastq.gz": 11 * MiB, "S2_R1.fastq.gz": 3 * MiB}
    for name, n in sizes.items():
        (data / name).write_bytes(os.urandom(n))
    page.goto(f"{server.url}/console/project/{pid}")
    assert row_states(page) == {}
    args = ["--auth-token", token, "--project", pid, "--do-not-compress", "--chunk-size", "5M",
            "--upload-threads", "2", "--throttle", "6M", *sorted(sizes)]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(run_ua, *args, env=ua_env(server), cwd=data, timeout=60)
        # the page refreshes itself (no reload here): files appear while still open
        page.wait_for_selector("#files-body tr[data-state=open]", timeout=20000)
        try:  # for the screenshot: some parts in while a file is still open
            page.wait_for_function(
                "() => [...document.querySelectorAll('#files-body tr[data-file]')].some("
                "r => r.dataset.state === 'open' && !r.querySelector('td.parts')"
                ".textContent.startsWith('0/'))", timeout=6000)
        except Exception:  # noqa: BLE001 - the upload was quicker than the poll; fine
            pass
        shot(page, "05-project-uploading")
        proc = fut.result()
    assert proc.returncode == 0, proc.stderr
    assert token not in proc.stdout + proc.stderr
    page.wait_for_selector("#files-body tr[data-state=closing]", timeout=10000)
    page.wait_for_function(
        "() => { const r = document.querySelectorAll('#files-body tr[data-file]');"
        " return r.length === 3 && [...r].every(x => x.dataset.state === 'closed'); }",
        timeout=20000)
    assert row_states(page) == {n: "closed" for n in sizes}
    r1 = page.locator("#files-body tr[data-name='S1_R1.fastq.gz']")
    assert r1.locator("td.parts").inner_text() == "3/3"
    assert r1.locator("td.size").get_attribute("title") == f"{11 * MiB} bytes"
    assert r1.locator("td.by").inner_text() == "user-admin"
    assert "3 closed" in page.inner_text("#counts")
    shot(page, "06-project-closed")

    # the provider may sign in with the limited token too: one project, nothing else
    provider = sign_in(new_page(), server, token)
    assert "limited to " + pid in provider.inner_text(".flash-info")
    assert [r.get_attribute("data-project") for r in
            provider.query_selector_all("#projects tr[data-project]")] == [pid]
    assert provider.locator("#new-project").count() == 0
    provider.goto(server.url + "/console/tokens")
    assert len(provider.query_selector_all("#token-table tr[data-token]")) == 1
    assert provider.locator("#new-token-form").count() == 0
    provider.goto(f"{server.url}/console/project/{pid}")
    assert provider.inner_text("#my-level") == "UPLOAD"
    assert provider.locator("#share-button").count() == 0
    assert provider.locator("#upload-help").count() == 1

    # 5. upload complete: revoke the token in the page
    page.goto(server.url + "/console/tokens")
    tid = page.locator("#token-table tr", has_text="SeqLab run 42").get_attribute("data-token")
    with page.expect_navigation():
        page.click(f"#token-table tr[data-token='{tid}'] button.danger")
    assert page.get_attribute(f"#token-table tr[data-token='{tid}']", "data-status") == "revoked"
    assert "Revoked" in page.inner_text(".flash-ok")
    shot(page, "07-tokens-revoked")

    # 6. the next ua run with that token fails with the token error, exit 3
    (data / "late.fastq.gz").write_bytes(b"late")
    p = run_ua("--auth-token", token, "--project", pid, "late.fastq.gz", env=ua_env(server),
               cwd=data)
    assert p.returncode == 3, (p.returncode, p.stderr)
    assert "the auth token was rejected" in p.stderr and "InvalidAuthentication" in p.stderr
    assert token not in p.stderr
    page.goto(f"{server.url}/console/project/{pid}")
    assert set(row_states(page)) == set(sizes)
    provider.reload()  # the provider's console session ended with the token
    # (reason=token, or reason=expired when the page's 2 s poll noticed first)
    assert re.search(r"/console/login\?reason=(token|expired)$", provider.url)


def test_share_view_member_sees_no_controls_and_forged_post_is_refused(
        ua_server, new_page):
    server = ua_server
    server.new_user("viewer")
    view_tok = server.new_token(user="viewer")
    pid = server.api("/project/new", {"name": "shared-with-viewer"})[1]["id"]

    admin = sign_in(new_page(), server, server.admin_token)
    admin.goto(f"{server.url}/console/project/{pid}")
    admin.click("#share-button")
    admin.fill("#invitee", "viewer")
    admin.select_option("#member-level", "UPLOAD")
    with admin.expect_navigation():
        admin.click("#add-member button[type=submit]")
    assert admin.locator("#member-table tr[data-user='user-viewer'] select").input_value() == "UPLOAD"
    # change the level down to VIEW (decreasePermissions)
    admin.select_option("#member-table tr[data-user='user-viewer'] select", "VIEW")
    with admin.expect_navigation():
        admin.click("#member-table tr[data-user='user-viewer'] form.row button")
    assert admin.locator("#member-table tr[data-user='user-viewer'] select").input_value() == "VIEW"
    shot(admin, "08-share")
    # the last ADMINISTER cannot demote themselves: refused by the service, shown as an error
    admin.select_option("#member-table tr[data-user='user-admin'] select", "VIEW")
    with admin.expect_navigation():
        admin.click("#member-table tr[data-user='user-admin'] form.row button")
    assert "at least one ADMINISTER" in admin.inner_text(".flash-error")
    assert server.api(f"/{pid}/describe", {"permissions": True})[1]["permissions"] == {
        "user-admin": "ADMINISTER", "user-viewer": "VIEW"}

    viewer = sign_in(new_page(), server, view_tok)
    viewer.goto(f"{server.url}/console/")
    assert viewer.locator(f"#projects tr[data-project='{pid}'] .level").inner_text() == "VIEW"
    viewer.goto(f"{server.url}/console/project/{pid}")
    assert viewer.inner_text("#my-level") == "VIEW"
    for sel in ("#share-button", "#transfer-button", "#token-button", "#project-actions",
                "#new-folder", "#upload-help"):
        assert viewer.locator(sel).count() == 0, sel
    shot(viewer, "09-viewer-project")
    viewer.goto(f"{server.url}/console/tokens")
    assert viewer.locator("#new-token-form").count() == 0  # no project it could upload to

    # the share page itself and forged POSTs (with the viewer's own valid CSRF token)
    resp = viewer.goto(f"{server.url}/console/project/{pid}/share")
    assert resp.status == 403 and "PermissionDenied" in viewer.inner_text("h1")
    csrf = csrf_of(viewer)
    forged = [
        (f"/console/project/{pid}/share", {"invitee": "viewer", "level": "ADMINISTER"}),
        (f"/console/project/{pid}/share/level", {"user": "user-viewer", "level": "ADMINISTER"}),
        (f"/console/project/{pid}/share/remove", {"user": "user-admin"}),
        (f"/console/project/{pid}/transfer", {"invitee": "viewer"}),
        (f"/console/project/{pid}/folder", {"parent": "/", "name": "sneaky"}),
        ("/console/tokens", {"project": pid, "level": "UPLOAD", "expires_date": "2099-01-01"}),
    ]
    for action, fields in forged:
        resp_status = []
        viewer.once("response", lambda r: resp_status.append(r.status))
        submit_forged_form(viewer, action, {"csrf": csrf, **fields})
        assert resp_status == [403], (action, resp_status)
        assert "PermissionDenied" in viewer.inner_text("h1"), action
    shot(viewer, "10-forbidden")
    desc = server.api(f"/{pid}/describe", {"permissions": True, "folders": True})[1]
    assert desc["permissions"] == {"user-admin": "ADMINISTER", "user-viewer": "VIEW"}
    assert desc["pendingTransfer"] is None and desc["folders"] == ["/"]
    toks = server.admin("token", "list")
    assert not any(ln.split("\t")[1] == "user-viewer" and pid in ln for ln in toks.splitlines())


def projects_of_admin(server) -> list[str]:
    return sorted(r["id"] for r in server.api("/system/findProjects", {"level": "VIEW"})[1]["results"])


def test_csrf_less_and_cross_origin_posts_are_refused(ua_server, new_page):
    server = ua_server
    page = sign_in(new_page(), server, server.admin_token)
    before = projects_of_admin(server)
    for fields in ({"name": "csrf-less"}, {"name": "csrf-wrong", "csrf": "x" * 43}):
        statuses = []
        page.once("response", lambda r: statuses.append(r.status))
        submit_forged_form(page, "/console/projects", fields)
        assert statuses == [403]
        assert "CSRF" in page.inner_text("#error-message")
    # a valid CSRF token but posted from another origin
    page.goto(server.url + "/console/")
    r = page.request.post(server.url + "/console/projects", form={
        "name": "cross-origin", "csrf": csrf_of(page)}, headers={"Origin": "http://evil.example"},
        max_redirects=0)
    assert r.status == 403 and "Cross-origin" in r.text()
    assert projects_of_admin(server) == before
    # without any session: back to sign-in, nothing created
    r = page.request.post(server.url + "/console/projects", form={"name": "no-session"},
                          headers={"Cookie": ""}, max_redirects=0)
    assert r.status in (303, 403)
    assert projects_of_admin(server) == before


def test_wrong_or_revoked_token_cannot_sign_in(ua_server, new_page):
    server = ua_server
    revoked = server.new_token()
    server.admin("token", "revoke", revoked)
    page = new_page()
    for bad in ("not-a-real-token-" + "0" * 23, revoked):
        page.goto(server.url + "/console/login")
        page.fill("#token", bad)
        statuses = []
        page.once("response", lambda r: statuses.append(r.status))
        with page.expect_navigation():
            page.click("#sign-in")
        assert statuses == [401]
        assert "Sign-in failed" in page.inner_text("#login-error")
        assert not any(c["name"] == "ua_console" for c in page.context.cookies())
        assert bad not in page.content()
    shot(page, "02-login-failed")
    # a sign-in POST without the login form's CSRF cookie/field is refused too
    r = page.request.post(server.url + "/console/login", form={"token": server.admin_token},
                          max_redirects=0)
    assert r.status == 403
    assert not any(c["name"] == "ua_console" for c in page.context.cookies())


def test_session_ends_when_its_token_is_revoked_and_on_sign_out(ua_server, new_page):
    server = ua_server
    tok = server.new_token()
    page = sign_in(new_page(), server, tok)
    assert page.inner_text("#me") == "user-admin"
    server.admin("token", "revoke", tok)
    page.goto(server.url + "/console/tokens")
    assert page.url.endswith("/console/login?reason=token")
    assert "no longer valid" in page.inner_text(".flash-info")

    page = sign_in(new_page(), server, server.admin_token)
    with page.expect_navigation():
        page.click("#sign-out")
    assert "signed out" in page.inner_text(".flash-info")
    page.goto(server.url + "/console/")
    assert page.url.endswith("/console/login")  # the cookie is gone


def test_transfer_and_accept(ua_server, new_page):
    server = ua_server
    server.new_user("bob")
    bob_tok = server.new_token(user="bob")
    admin = sign_in(new_page(), server, server.admin_token)
    admin.goto(server.url + "/console/")
    shot(admin, "03-projects")
    admin.fill("#project-name", "for-bob")
    with admin.expect_navigation():
        admin.click("#new-project button[type=submit]")
    pid = admin.inner_text("#project-id")
    admin.click("#transfer-button")
    admin.fill("#recipient", "bob")
    with admin.expect_navigation():
        admin.click("#transfer-form button[type=submit]")
    assert "transfer to user-bob pending" in admin.inner_text(".sub")
    admin.click("#transfer-button")
    assert "user-bob" in admin.inner_text("#pending")
    shot(admin, "11-transfer")

    bob = sign_in(new_page(), server, bob_tok)
    assert bob.locator(f"#projects tr[data-project='{pid}']").count() == 0
    row = bob.locator(f"#incoming tr[data-project='{pid}']")
    assert "for-bob" in row.inner_text() and "user-admin" in row.inner_text()
    shot(bob, "12-incoming-transfer")
    with bob.expect_navigation():
        row.locator("button").click()
    assert bob.inner_text("#my-level") == "ADMINISTER"
    assert bob.locator("#share-button").count() == 1
    st, desc = server.api(f"/{pid}/describe", {"permissions": True})
    assert desc["permissions"]["user-bob"] == "ADMINISTER" and desc["billTo"] == "user-bob"
    assert desc["pendingTransfer"] is None


def test_file_page_parts_properties_and_download(ua_server, new_page, run_ua, tmp_path):
    server = ua_server
    pid = server.api("/project/new", {"name": "file-page"})[1]["id"]
    body = os.urandom(6 * MiB + 123)
    (tmp_path / "sample.bam").write_bytes(body)
    p = run_ua("--project", pid, "--do-not-compress", "--chunk-size", "5M", "--folder", "/run42",
               "--property", "sample=S1", "--tag", "raw", "--wait-on-close", "sample.bam",
               cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    fid = p.stdout.strip()
    page = sign_in(new_page(), server, server.admin_token)
    page.goto(f"{server.url}/console/project/{pid}")
    page.click("ul.folders a")
    page.click("#files-body a")
    assert page.inner_text("#file-name") == "sample.bam"
    assert page.inner_text("#file-state") == "closed"
    import hashlib
    md5s = [c.inner_text() for c in page.locator("#parts tbody td:nth-child(4)").all()]
    assert md5s == [hashlib.md5(body[:5 * MiB]).hexdigest(), hashlib.md5(body[5 * MiB:]).hexdigest()]
    assert "S1" in page.inner_text("#properties")
    shot(page, "13-file")
    with page.expect_download() as dl:
        page.click("#download")
    assert Path(dl.value.path()).read_bytes() == body
    # a file the caller cannot see is a 404 page, not a leak
    server.new_user("stranger")
    other = sign_in(new_page(), server, server.new_token(user="stranger"))
    resp = other.goto(f"{server.url}/console/file/{fid}")
    assert resp.status == 404
    resp = other.goto(f"{server.url}/console/file/{fid}/download")
    assert resp.status == 404
