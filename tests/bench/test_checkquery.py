"""`python -m bench.checkquery` on a tiny run: each trip size is asked both ways (as Django
binds it, and prepared) on the test database and gets its rows. How fast each was is for the
command to print, not for a test to judge."""

import pytest
from django.db import connection

from bench import checkquery

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="asks PostgreSQL"),
]


def test_each_size_is_asked_both_ways_in_each_round(capsys):
    assert checkquery.main(["--sizes", "1,3", "--runs", "5", "--rounds", "2"]) == 0

    rows = [line for line in capsys.readouterr().out.splitlines() if line[2:3].isdigit()]
    ways = [tuple(cell.strip() for cell in row.split("|")[1:3]) for row in rows]
    assert ways == [
        (size, way)
        for size in ("1", "3")
        for _ in range(2)
        for way in ("as Django binds it", "prepared")
    ]


def test_it_refuses_a_run_of_no_queries(capsys):
    with pytest.raises(SystemExit) as refused:
        checkquery.main(["--runs", "0"])

    assert refused.value.code == 2
    assert "take 1 or more" in capsys.readouterr().err
