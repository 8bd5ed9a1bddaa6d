"""trinit._deferred: modules the agent's libraries import but it never uses load on first use.

Each test runs a fresh interpreter, since what counts is what a new agent process imports.
"""

from __future__ import annotations

import hmac
import json
import subprocess
import sys
import textwrap
from typing import cast


def _run(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    result: dict[str, object] = json.loads(out.splitlines()[-1])
    return result


def test_deferred_modules_do_not_run_until_an_attribute_is_used() -> None:
    result = _run(
        """
        import json, sys
        from trinit._deferred import AGENT_DEFERRED, defer, is_loaded
        deferred = defer()
        import trio, ssl, hmac
        from google.protobuf.internal import python_message
        from trinit._proto import sandbox_pb2 as pb
        message = pb.GetenvRequest(key="PATH")
        parsed = pb.GetenvRequest.FromString(message.SerializeToString()).key
        before = {n: is_loaded(n) for n in AGENT_DEFERRED}
        imported = sorted(n for n in ("_ssl", "_hashlib", "pickle", "google.protobuf.text_format")
                          if n in sys.modules)
        context = ssl.create_default_context()  # the first use imports the real ssl
        digest = hmac.new(b"k", b"m", "sha256").hexdigest()
        print(json.dumps({
            "deferred": deferred,
            "before": before,
            "imported": imported,
            "parsed": parsed,
            "after": {n: is_loaded(n) for n in ("ssl", "hmac")},
            "verify": int(context.verify_mode),
            "digest": digest,
            "attach": callable(python_message._AttachFieldHelpers),
            "text": str(message).strip(),
        }))
        """
    )
    assert result["deferred"] == ["ssl", "hmac", "google.protobuf.internal.python_message"]
    assert result["before"] == dict.fromkeys(result["deferred"], False)
    assert result["imported"] == []  # nor what they would have pulled in
    assert result["parsed"] == "PATH"
    assert result["after"] == {"ssl": True, "hmac": True}
    assert result["verify"] == 2  # ssl.CERT_REQUIRED: the real module answered
    assert result["digest"] == hmac.new(b"k", b"m", "sha256").hexdigest()
    assert result["attach"] is True
    assert result["text"] == 'key: "PATH"'


def test_a_stand_in_forwards_assignments_and_loads_once_under_threads() -> None:
    result = _run(
        """
        import json, sys, threading
        from trinit._deferred import defer
        defer(("ssl",))
        import ssl
        stand_in = ssl
        seen = []
        barrier = threading.Barrier(8)
        def use():
            barrier.wait()
            seen.append(id(ssl.SSLContext))
        threads = [threading.Thread(target=use) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        stand_in.trinit_marker = 7
        real = sys.modules["ssl"]
        print(json.dumps({
            "distinct": len(set(seen)),
            "replaced": real is not stand_in,
            "marker": getattr(real, "trinit_marker", None),
            "via_stand_in": stand_in.trinit_marker,
            "dir": "SSLContext" in dir(stand_in),
        }))
        """
    )
    assert result == {
        "distinct": 1,
        "replaced": True,
        "marker": 7,
        "via_stand_in": 7,
        "dir": True,
    }


def test_imported_or_missing_modules_are_left_alone() -> None:
    result = _run(
        """
        import json, sys
        from trinit._deferred import DeferredModule, defer
        deferred = defer(("json", "trinit_no_such_module"))
        print(json.dumps({
            "deferred": deferred,
            "json_real": not isinstance(sys.modules["json"], DeferredModule),
            "missing": "trinit_no_such_module" in sys.modules,
        }))
        """
    )
    assert result == {"deferred": [], "json_real": True, "missing": False}


def test_trio_imports_without_spawning_a_process() -> None:
    """trio asks ``ctypes.util.find_library("pthread")`` at import, which runs ``ldconfig
    -p`` in a child process: a child of PID 1 before its reaper exists. Under
    ``libpthread_known`` it does not; thread names still reach the kernel."""
    code = """
        import json, os, sys
        spawned = []
        sys.addaudithook(lambda event, args: spawned.append(event)
                         if event in ("subprocess.Popen", "os.posix_spawn", "os.fork") else None)
        from trinit._deferred import libpthread_known
        import ctypes.util
        real = ctypes.util.find_library
        with {context}:
            import trio
        restored = ctypes.util.find_library is real
        async def main():
            def name():
                import threading
                return open(f"/proc/self/task/{{threading.get_native_id()}}/comm").read().strip()
            return await trio.to_thread.run_sync(name)
        comm = trio.run(main)
        print(json.dumps({{"spawned": spawned, "restored": restored, "comm": comm}}))
    """
    known = _run(code.format(context="libpthread_known()"))
    assert known["spawned"] == []
    assert known["restored"] is True
    assert str(known["comm"]).startswith("name")  # trio named its worker after the function
    # the check can fail: without the context the same import spawns ldconfig
    plain = _run(code.format(context="open(os.devnull)"))
    assert "subprocess.Popen" in cast(
        list[str], plain["spawned"]
    )  # ldconfig (and gcc, ld if it finds none)
