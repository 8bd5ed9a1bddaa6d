"""Setenv/Getenv on the real os.environ (cleaned up) and on a private mapping."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from trinit._proto import sandbox_pb2 as pb
from trinit.errors import InvalidArgument
from trinit.system import getenv, setenv

KEY = "TRINIT_TEST_SYSTEM_ENV"


@pytest.fixture
def clean_env() -> Iterator[None]:
    os.environ.pop(KEY, None)
    yield
    os.environ.pop(KEY, None)


async def test_setenv_getenv_roundtrip(clean_env: None) -> None:
    await setenv(pb.SetenvRequest(key=KEY, value="/usr/bin:/bin"))
    assert os.environ[KEY] == "/usr/bin:/bin"
    assert (await getenv(pb.GetenvRequest(key=KEY))).value == "/usr/bin:/bin"
    await setenv(pb.SetenvRequest(key=KEY, value="again"))  # overwrite
    assert os.environ[KEY] == "again"


async def test_setenv_unset_value_means_empty(clean_env: None) -> None:
    await setenv(pb.SetenvRequest(key=KEY))
    response = await getenv(pb.GetenvRequest(key=KEY))
    assert response.HasField("value") and response.value == ""


async def test_getenv_missing_leaves_value_unset(clean_env: None) -> None:
    response = await getenv(pb.GetenvRequest(key=KEY))
    assert not response.HasField("value")


async def test_setenv_invalid_keys() -> None:
    environ: dict[str, str] = {}
    for key in ("", "A=B", "A\x00B"):
        with pytest.raises(InvalidArgument, match=r"^setenv: "):
            await setenv(pb.SetenvRequest(key=key, value="x"), environ=environ)
    with pytest.raises(InvalidArgument):
        await setenv(pb.SetenvRequest(key="A", value="x\x00y"), environ=environ)
    assert environ == {}
    assert not (await getenv(pb.GetenvRequest(key="A\x00B"), environ=environ)).HasField("value")
