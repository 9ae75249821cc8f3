"""The console over plain HTTP (no browser): headers, cookie flags, CSRF and permission
refusals at the protocol level, against a live ua-server."""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse


def request(server, method, path, *, form=None, cookies=None, headers=None):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    h = dict(headers or {})
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        h["Content-Type"] = "application/x-www-form-urlencoded"
    if cookies:
        h["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return r.status, r.headers, r.read().decode(errors="replace")
    finally:
        conn.close()


def set_cookies(headers) -> dict[str, str]:
    return {c.split("=", 1)[0]: c for c in headers.get_all("Set-Cookie") or []}


def sign_in(server, token):
    st, h, body = request(server, "GET", "/console/login")
    assert st == 200
    login = set_cookies(h)["ua_console_login"]
    nonce = re.match(r"ua_console_login=([^;]+)", login).group(1)
    assert re.search(rf'name="csrf" value="{re.escape(nonce)}"', body)
    st, h, _ = request(server, "POST", "/console/login", form={"csrf": nonce, "token": token},
                       cookies={"ua_console_login": nonce})
    return st, h


def test_headers_cookie_flags_and_csrf(ua_server):
    server = ua_server
    st, h, _ = request(server, "GET", "/")
    assert st == 302 and h["Location"] == "/console/"
    st, h, _ = request(server, "GET", "/console/")
    assert st == 303 and h["Location"] == "/console/login"
    st, h, body = request(server, "GET", "/console/login")
    assert "script-src 'self'" in h["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    assert h["X-Frame-Options"] == "DENY" and h["Cache-Control"] == "no-store"
    assert "<script" not in body  # the sign-in page runs no script at all

    # sign-in without the login CSRF pair is refused and sets no session
    st, h, body = request(server, "POST", "/console/login", form={"token": server.admin_token})
    assert st == 403 and "ua_console" not in set_cookies(h)

    st, h = sign_in(server, server.admin_token)
    assert st == 303 and h["Location"] == "/console/"
    cookie = set_cookies(h)["ua_console"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    sid = re.match(r"ua_console=([^;]+)", cookie).group(1)
    assert server.admin_token not in sid
    jar = {"ua_console": sid}

    st, h, body = request(server, "GET", "/console/", cookies=jar)
    assert st == 200 and "user-admin" in body and server.admin_token not in body
    csrf = re.search(r'name="csrf" value="([^"]+)"', body).group(1)

    st, _, body = request(server, "GET", f"/console/project/{server.project_id}/files.json",
                          cookies=jar)
    assert st == 200 and set(json.loads(body)) >= {"files", "folders", "counts"}

    # POSTs: no CSRF, wrong CSRF, foreign Origin → 403; the real thing → 303 to the project
    for form, hdrs in (({"name": "a"}, {}), ({"name": "b", "csrf": "nope"}, {}),
                       ({"name": "c", "csrf": csrf}, {"Origin": "http://evil.example"})):
        st, _, body = request(server, "POST", "/console/projects", form=form, cookies=jar,
                              headers=hdrs)
        assert st == 403, form
    st, h, _ = request(server, "POST", "/console/projects", form={"name": "ok", "csrf": csrf},
                       cookies=jar, headers={"Origin": server.url})
    assert st == 303 and h["Location"].startswith("/console/project/project-")
    names = [r["describe"]["name"] for r in server.api(
        "/system/findProjects", {"level": "VIEW", "describe": True})[1]["results"]]
    assert "ok" in names and not {"a", "b", "c"} & set(names)

    # sign out: the session id is dead server-side, not just the cookie
    st, h, _ = request(server, "POST", "/console/logout", form={"csrf": csrf}, cookies=jar)
    assert st == 303
    st, h, _ = request(server, "GET", "/console/", cookies=jar)
    assert st == 303 and h["Location"] == "/console/login?reason=expired"


def test_forged_posts_from_a_view_member_get_403_and_change_nothing(ua_server):
    server = ua_server
    server.new_user("httpviewer")
    pid = server.api("/project/new", {"name": "http-view"})[1]["id"]
    assert server.api(f"/{pid}/invite", {"invitee": "httpviewer", "level": "VIEW"})[0] == 200
    st, h = sign_in(server, server.new_token(user="httpviewer"))
    jar = {"ua_console": re.match(r"ua_console=([^;]+)", set_cookies(h)["ua_console"]).group(1)}
    st, _, body = request(server, "GET", f"/console/project/{pid}", cookies=jar)
    assert st == 200
    for marker in ('id="share-button"', 'id="token-button"', 'id="new-folder"', "/share"):
        assert marker not in body
    csrf = re.search(r'name="csrf" value="([^"]+)"', body).group(1)
    for path, form in ((f"/console/project/{pid}/share", {"invitee": "httpviewer", "level": "ADMINISTER"}),
                       (f"/console/project/{pid}/transfer", {"invitee": "httpviewer"}),
                       ("/console/tokens", {"project": pid, "level": "CONTRIBUTE", "expires_date": ""})):
        st, _, body = request(server, "POST", path, form={"csrf": csrf, **form}, cookies=jar)
        assert st == 403 and "PermissionDenied" in body, path
    desc = server.api(f"/{pid}/describe", {"permissions": True})[1]
    assert desc["permissions"]["user-httpviewer"] == "VIEW" and desc["pendingTransfer"] is None
