"""CreateProcess's spec decoding and vminitd's alterations (docs/protocol.md §5.2, §9)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from trinit.errors import Internal, InvalidArgument
from trinit.exec import alter_spec, decode_spec
from trinit.exec._oci import DEFAULT_PATH

PASSWD = "root:x:0:0:root:/root:/bin/sh\nbin:x:1:1:bin:/bin:/bin/false\n"
GROUP = "root:x:0:\nbin:x:1:\nwheel:x:10:bin\nstaff:x:50:\n"


@pytest.fixture
def root(tmp_path: Path) -> str:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    return str(tmp_path)


def base(root: str, **process: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "ociVersion": "",
        "process": {"args": ["sh"], "cwd": "", "user": {"uid": 0, "gid": 0}, "env": []},
        "root": {"path": root},
        "linux": {"cgroupsPath": "", "namespaces": [{"type": "pid", "path": ""}]},
        "annotations": {"keep": "me"},
        "hooks": {"prestart": []},
    }
    spec["process"].update(process)
    return spec


def test_defaults(root: str) -> None:
    spec = base(root)
    original = copy.deepcopy(spec)
    altered = alter_spec(spec, "c1")
    assert spec == original  # the input is not modified
    assert altered["linux"]["cgroupsPath"] == "/container/c1"
    assert altered["process"]["cwd"] == "/"
    assert altered["process"]["env"] == [DEFAULT_PATH, "HOME=/root"]
    assert altered["process"]["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    # every key received is kept
    assert altered["annotations"] == {"keep": "me"} and altered["hooks"] == {"prestart": []}
    assert altered["ociVersion"] == ""


def test_an_owned_spec_is_altered_in_place_with_the_same_result(root: str) -> None:
    """CreateProcess gives away the spec it just decoded: no copy, the same alterations."""
    copied = alter_spec(base(root), "c1")
    spec = base(root)
    owned = alter_spec(spec, "c1", owned=True)
    assert owned is spec
    assert owned == copied


def test_existing_values_win(root: str) -> None:
    spec = base(root, cwd="/srv", env=["PATH=/x", "HOME=/h", "TERM=vt100"], terminal=True)
    spec["linux"]["cgroupsPath"] = "/container/pod/p/c1"
    altered = alter_spec(spec, "c1")
    assert altered["linux"]["cgroupsPath"] == "/container/pod/p/c1"
    assert altered["process"]["cwd"] == "/srv"
    assert altered["process"]["env"] == ["PATH=/x", "HOME=/h", "TERM=vt100"]


def test_term_only_with_terminal(root: str) -> None:
    assert "TERM=xterm" in alter_spec(base(root, terminal=True), "c")["process"]["env"]
    assert "TERM=xterm" not in alter_spec(base(root, terminal=False), "c")["process"]["env"]


def test_home_of_numeric_unknown_user(root: str) -> None:
    spec = base(root, user={"uid": 40000, "gid": 40000})
    altered = alter_spec(spec, "c")
    assert "HOME=/" in altered["process"]["env"]
    assert altered["process"]["user"] == {"uid": 40000, "gid": 40000, "additionalGids": [40000]}


def test_username_overrides_ids(root: str) -> None:
    spec = base(root, user={"uid": 0, "gid": 0, "username": "bin"})
    user = alter_spec(spec, "c")["process"]["user"]
    assert (user["uid"], user["gid"]) == (1, 1)
    assert user["additionalGids"] == [10, 1]  # supplementary (wheel lists bin), then primary


def test_additional_gids_appended_and_deduped(root: str) -> None:
    spec = base(root, user={"uid": 0, "gid": 0, "username": "bin",
                            "additionalGids": [50, 1, 50, 7]})  # fmt: skip
    user = alter_spec(spec, "c")["process"]["user"]
    assert user["additionalGids"] == [50, 1, 7, 10]


def test_unknown_user_is_internal(root: str) -> None:
    with pytest.raises(Internal, match=r"^no such user: ghost$"):
        alter_spec(base(root, user={"uid": 0, "gid": 0, "username": "ghost"}), "c")


def test_missing_linux_gets_explicit_defaults(root: str) -> None:
    spec = base(root)
    del spec["linux"]
    altered = alter_spec(spec, "c9")
    assert altered["linux"] == {
        "namespaces": [
            {"type": "pid", "path": ""},
            {"type": "mount", "path": ""},
            {"type": "uts", "path": ""},
        ],
        "cgroupsPath": "/container/c9",
    }


def test_missing_user_defaults_to_root(root: str) -> None:
    spec = base(root)
    del spec["process"]["user"]
    assert alter_spec(spec, "c")["process"]["user"] == {
        "uid": 0, "gid": 0, "additionalGids": [0]
    }  # fmt: skip


@pytest.mark.parametrize("key", ["process", "root"])
def test_missing_required_object(root: str, key: str) -> None:
    spec = base(root)
    del spec[key]
    with pytest.raises(InvalidArgument, match=f"^invalid spec: {key} is missing$"):
        alter_spec(spec, "c")


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda s: s.update(process=[]), "process must be an object"),
        (lambda s: s.update(root={"path": 3}), "root.path must be a string"),
        (lambda s: s.update(root={}), "root.path must be a string"),
        (lambda s: s["process"].update(args="sh"), "process.args must be an array"),
        (lambda s: s["process"].update(env=[1]), r"process.env\[\] must be a string"),
        (lambda s: s["process"].update(user={"uid": "0"}), "process.user.uid must be an integer"),
        (lambda s: s["process"].update(user={"uid": True}), "process.user.uid must be an integer"),
        (lambda s: s["process"].update(terminal="yes"), "process.terminal must be a boolean"),
        (lambda s: s["process"].update(consoleSize=[24, 80]),
         "process.consoleSize must be an object"),
        (lambda s: s["process"].update(consoleSize={"height": 24}),
         "process.consoleSize.width must be an integer"),
        (lambda s: s.update(linux=[]), "linux must be an object"),
        (lambda s: s["linux"].update(namespaces=[{}]), r"linux.namespaces\[\].type must be"),
        (lambda s: s.update(mounts=[{"type": "tmpfs"}]), r"mounts\[\].destination must be"),
        (lambda s: s.update(mounts=[{"destination": "/x", "options": "ro"}]),
         r"mounts\[\].options must be an array"),
        (lambda s: s["process"].update(rlimits=[{"type": "RLIMIT_NOFILE", "soft": 1}]),
         r"process.rlimits\[\].hard must be an integer"),
        (lambda s: s["process"].update(capabilities={"bounding": "CAP_KILL"}),
         "process.capabilities.bounding must be an array"),
        (lambda s: s["linux"].update(sysctl={"a": 1}), "linux.sysctl values must be a string"),
    ],
)  # fmt: skip
def test_wrong_shapes_are_invalid_argument(root: str, mutate: Any, where: str) -> None:
    spec = base(root)
    mutate(spec)
    with pytest.raises(InvalidArgument, match=f"^invalid spec: {where}"):
        alter_spec(spec, "c")


def test_decode_spec() -> None:
    assert decode_spec(b'{"a": "\\/x"}') == {"a": "/x"}
    with pytest.raises(Internal, match=r"^failed to decode configuration: "):
        decode_spec(b"{nope")
    with pytest.raises(Internal, match=r"^failed to decode configuration: "):
        decode_spec(b"\xff\xfe\xfa")
    with pytest.raises(InvalidArgument, match=r"^configuration must be a JSON object$"):
        decode_spec(b"[1]")


def test_round_trip_through_json(root: str) -> None:
    altered = alter_spec(base(root), "c1")
    assert decode_spec(json.dumps(altered).encode()) == altered
