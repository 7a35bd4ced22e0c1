"""conftest.need_tool: a missing tool skips on a developer's machine and fails under CI=true."""
import pytest

from conftest import need_tool


def test_missing_tool_fails_under_ci_and_skips_elsewhere(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"^chromium not on PATH \(CI=true: .ci/run installs it"):
        need_tool(True, "chromium not on PATH")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="^chromium not on PATH$"):
        need_tool(True, "chromium not on PATH")
    need_tool(False, "present: nothing happens")
