"""Console session store: random ids, idle and absolute expiry, CSRF comparison (no browser)."""

import time

from ua.server.web.sessions import SessionStore


def test_sessions_expire_idle_and_absolute():
    st = SessionStore(idle_s=0.2, max_age_s=0.5)
    sid, s = st.new("tok", "user-a")
    assert st.get(sid) is s and st.get("nope") is None and st.get(None) is None
    assert s.token not in sid and len(sid) >= 40
    time.sleep(0.3)
    assert st.get(sid) is None  # idle
    sid, s = st.new("tok", "user-a")
    for _ in range(4):
        time.sleep(0.15)
        st.get(sid)
    assert st.get(sid) is None  # absolute, despite activity


def test_csrf_and_drop():
    st = SessionStore()
    sid, s = st.new("tok", "user-a")
    sid2, s2 = st.new("tok", "user-a")
    assert sid != sid2 and s.csrf != s2.csrf
    assert s.check_csrf(s.csrf) and not s.check_csrf(s2.csrf)
    assert not s.check_csrf("") and not s.check_csrf(None)
    st.drop(sid)
    assert st.get(sid) is None and st.get(sid2) is s2
