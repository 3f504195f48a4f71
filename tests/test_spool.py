import pytest

from userdata.sinks.spool import Spool


@pytest.mark.parametrize("pieces", [[], [b""], [b"user_id\n"], [b"a,b\n", b"", b"\xf0\x9f\x99\x82" * 100_000]])
def test_read_and_close_gives_the_pieces_joined_and_closes(pieces: list[bytes]) -> None:
    spool = Spool()
    for piece in pieces:
        spool.write(piece)
    assert not spool.closed
    assert spool.read_and_close() == b"".join(pieces)
    assert spool.closed


def test_close_can_come_again_and_after_a_read() -> None:
    spool = Spool()
    spool.write(b"x")
    spool.close()
    spool.close()
    assert spool.closed
    read = Spool()
    read.read_and_close()
    read.close()
    assert read.closed
