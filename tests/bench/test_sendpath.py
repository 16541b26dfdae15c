"""`python -m bench.sendpath` on a tiny run: it measures every layer of the send path over a real
connection, in the documented order. How fast each was is for the command to print, not for a
test to judge."""

from twisted.internet import tcp

from bench import sendpath


def test_it_measures_each_layer_of_the_send_path(monkeypatch):
    monkeypatch.setattr(tcp.Server, "write", tcp.Server.write)  # put back after: it installs
    figures = sendpath.measure(messages=300, rounds=1, size=30)

    assert [name for name, _ in figures] == [
        "socket.send",
        "Twisted write",
        "write_message",
        "Connection.send_frame",
    ]
    assert all(micros > 0 for _, micros in figures)
