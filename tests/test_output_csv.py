import csv
import io

import pytest
from helpers import fast_settings, wait_until

from userdata.index import UserIndex
from userdata.records import InvalidRecord, UserRecord
from userdata.sinks.output_csv import OutputWriter, parse_output, render_output
from userdata.stores.folder import FolderStore

RECORDS = [
    UserRecord("0001", "Zoë", "O'Brien", -5, "src-data/0001.png"),
    UserRecord("10", 'Quote "Q"', "Smith, Jr", 0, None),
    UserRecord("9", "Line\nBreak", "Lee", 1_700_000_000_000, None),
]


def test_render_writes_the_header_and_standard_quoting_without_bom():
    data = render_output(RECORDS)
    assert data.startswith(b"user_id,first_name,last_name,birthts,img_path\n")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows[1:] == [
        ["0001", "Zoë", "O'Brien", "-5", "src-data/0001.png"],
        ["10", 'Quote "Q"', "Smith, Jr", "0", ""],
        ["9", "Line\nBreak", "Lee", "1700000000000", ""],
    ]


def test_parse_reads_back_what_render_wrote():
    assert parse_output(render_output(RECORDS)) == RECORDS
    assert parse_output(b"") == []


@pytest.mark.parametrize(
    "data",
    [
        b"id,name\n1,a\n",
        b"user_id,first_name,last_name,birthts,img_path\n1,A,B,notanumber,\n",
        b"user_id,first_name,last_name,birthts,img_path\n1,A,B\n",
        b"user_id,first_name,last_name,birthts,img_path\n1,,B,5,\n",
        b"\xff\xfe",
    ],
    ids=["other-header", "bad-birthts", "short-row", "empty-name", "not-utf8"],
)
def test_parse_rejects_what_this_service_did_not_write(data):
    with pytest.raises(InvalidRecord):
        parse_output(data)


async def test_a_corrupt_output_csv_is_ignored_on_start_and_replaced(start_service, data_dir, write_user, output_path):
    output_path.parent.mkdir(parents=True)
    output_path.write_bytes(b"garbage,that,is\nnot,ours,\n")
    write_user("7")
    service = await start_service(fast_settings(data_dir))
    assert await service.user_ids() == ["7"]
    await wait_until(lambda: output_path.read_bytes().startswith(b"user_id,"))


async def test_a_failing_write_degrades_health_and_is_retried(start_service, data_dir, write_user, output_path):
    output_path.parent.parent.mkdir(parents=True, exist_ok=True)
    output_path.parent.write_text("a file where the output folder should be")
    write_user("7")
    service = await start_service(fast_settings(data_dir))
    service.output.retry_delay = 0.05
    await wait_until(lambda: service.output.error is not None)
    health = await service.get("/health")
    assert health["status"] == "degraded" and "output.csv" in health["cause"], health
    assert await service.user_ids() == ["7"]  # queries are unaffected
    output_path.parent.unlink()
    await wait_until(lambda: output_path.exists())
    assert (await service.get("/health"))["status"] == "ok"


async def test_nothing_is_written_before_anything_changed(tmp_path):
    store = FolderStore(tmp_path, "b", "src/")
    writer = OutputWriter(store, UserIndex(), "out/output.csv")
    assert await writer.restore() == []
    index_version_written = await writer.flush()
    assert index_version_written and writer.writes == 1  # an empty index is still an output
    assert await writer.flush() and writer.writes == 1
