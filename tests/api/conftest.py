# Socket peers for the tests where API writes meet live editors.
from tests.realtime.conftest import peer_for  # noqa: F401
