from helpers import wait_until


async def test_drop_edit_delete(service, write_user, source_dir):
    assert await service.get("/data") == []
    write_user("7", "Ann", "Lee", 0, png=True)
    await wait_until(lambda: "7" in service.index)
    data = await service.get("/data")
    assert data == [{"user_id": "7", "first_name": "Ann", "last_name": "Lee", "birthts": 0, "img_path": "src-data/7.png"}]
    (source_dir / "7.png").unlink()
    await wait_until(lambda: service.index.get("7").img_path is None)
    (source_dir / "7.csv").unlink()
    await wait_until(lambda: "7" not in service.index)
