"""`python -m bench.presencepath` on a tiny run: every way of every operation runs against a
private Valkey and gets its row. How fast each was is for the command to print, not for a test
to judge."""

import pytest

from bench import presencepath


def test_each_way_runs_and_gets_a_row_per_round(capsys):
    assert presencepath.main(["--count", "5", "--rounds", "2"]) == 0

    printed = capsys.readouterr().out
    for turn in (1, 2):
        for way in (
            "first state | one script (claim)",
            "first state | HGET, then MULTI (before 60)",
            "leave | one script (remove)",
            "leave | MULTI (before 61)",
            "read | HGETALL (entries)",
        ):
            assert f"| {turn} | {way} |" in printed


def test_it_refuses_a_run_of_no_calls(capsys):
    with pytest.raises(SystemExit) as refused:
        presencepath.main(["--count", "0"])

    assert refused.value.code == 2
    assert "--count and --rounds take 1 or more" in capsys.readouterr().err


def test_it_leaves_the_environment_as_it_found_it(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/5")
    presencepath.main(["--count", "1", "--rounds", "1"])

    assert presencepath.os.environ["REDIS_URL"] == "redis://127.0.0.1:6379/5"
