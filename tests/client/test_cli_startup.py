"""Start-up decisions in ua/cli.py that ua-server cannot provoke: /system/greet update notices.

The API here is a stand-in object answering ``greet()`` with canned payloads (ua-server always
reports no update); the code under test is ``ua.cli.greet``'s handling of them."""

import asyncio

import pytest

from ua.api.errors import InvalidAuthentication, make_api_error
from ua.cli import Fatal, greet, startup_error


class GreetOnly:
    def __init__(self, answer):
        self.answer = answer

    async def greet(self):
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def run_greet(answer):
    return asyncio.run(greet(GreetOnly(answer), "http://h:1"))


def test_no_update_is_silent(capsys):
    run_greet({"messages": [], "update": {"available": False}})
    run_greet({})
    assert capsys.readouterr().err == ""


def test_recommended_update_banner_then_continue(capsys):
    run_greet({"update": {"available": True, "version": "1.6.0", "url": "https://x/ua", "level": "recommended"}})
    err = capsys.readouterr().err
    assert "*********** Update Available ***********" in err
    assert "A new version of Upload Agent (v1.6.0) is available for your platform!" in err


def test_required_update_exit_3(capsys):
    with pytest.raises(Fatal) as e:
        run_greet({"update": {"available": True, "version": "2.0.0", "url": "https://x/ua", "level": "required"}})
    assert e.value.code == 3
    err = capsys.readouterr().err
    assert "Upload Agent being used is too old to continue." in err
    assert "Please download latest version (v2.0.0) from https://x/ua" in err


def test_greet_errors_are_one_line_exit_3():
    with pytest.raises(Fatal) as e:
        run_greet(InvalidAuthentication("InvalidAuthentication", "expired", 401))
    assert e.value.code == 3
    assert str(e.value) == ("the auth token was rejected by http://h:1 (InvalidAuthentication: expired). Check "
                            "--auth-token or DX_SECURITY_CONTEXT.")
    with pytest.raises(Fatal) as e:
        run_greet(make_api_error(500, "InternalError", "boom"))
    assert str(e.value).startswith("Unable to connect to API server http://h:1: an unexpected error occurred.")
    assert "\n" not in str(startup_error(ConnectionRefusedError("refused"), "http://h:1"))
