"""`python -m bench.connectpath` on a tiny run: every level opens and syncs every socket it is
asked for, collab's through its real checks, room and presence (a scratch database and a
private Valkey), and gets its row. How fast each was is for the command to print, not for a test
to judge."""

import json

import pytest

from bench import connectpath


def test_each_level_opens_and_syncs_every_socket(tmp_path, capsys):
    out = tmp_path / "connectpath.json"
    code = connectpath.main(["--sockets", "20", "--concurrency", "4", "--out", str(out)])

    assert code == 0
    (figures,) = json.loads(out.read_text())
    assert list(figures) == ["bare", "tickets", "sessions"]
    for row in figures.values():
        assert (row["sockets"], row["failed"]) == (20, 0)
        assert row["cpu_ms_per_socket"] >= row["loop_cpu_ms_per_socket"] > 0
    printed = capsys.readouterr().out
    assert "| 1 | tickets |" in printed and "| 1 | sessions |" in printed


def test_it_refuses_a_run_of_no_sockets_before_starting_anything(capsys):
    with pytest.raises(SystemExit) as refused:
        connectpath.main(["--sockets", "0"])

    assert refused.value.code == 2
    assert "--sockets, --concurrency and --rounds take 1 or more" in capsys.readouterr().err
