"""`python -m bench.floor` on a tiny run: each level below collab starts as real daphne
processes, answers the load client's handshakes, and gets its row. How fast each was is for the
command to print, not for a test to judge (the reference's level needs npm: `make bench`)."""

import json

from bench import floor


def test_each_level_below_collab_serves_the_load_clients_sockets(tmp_path, capsys):
    out = tmp_path / "floor.json"
    code = floor.main(
        ["--levels", "daphne,collab-daphne,channels", "--processes", "1"]
        + ["--connections", "20", "--concurrency", "4", "--out", str(out)]
    )

    assert code == 0
    (figures,) = json.loads(out.read_text())
    assert list(figures) == ["daphne", "collab-daphne", "channels"]
    for row in figures.values():
        assert row["failed"] == 0 and row["connects_per_s"] > 0
        # Measured (the process's CPU clock ticks in 10 ms: 20 sockets may read as 0.0).
        assert row["server_cpu_ms_per_connect"] is not None
        assert row["server_kb_per_connection"] is not None
    printed = capsys.readouterr().out
    assert "| 1 | collab-daphne |" in printed
