"""The initfs' ``/sbin/init``: a few lines of Python that start trinit as PID 1.

The kernel runs ``/init`` (a symlink to ``/sbin/init``) with the arguments after ``--`` on
its command line. The shebang starts the packaged interpreter isolated (``-I -S``: no
environment variables, no site-packages scan, nothing from the current directory); the
launcher records the uptime, puts trinit's site-packages on the path, runs the optional
preinit hook and hands over to ``trinit agent`` in this same process, so trinit is PID 1.

The preinit hook (``/etc/trinit/preinit.py``, only present when the builder was given
``--preinit``) runs inside PID 1 before the agent starts; the VM tests use it to start their
in-guest driver. A failing hook is reported on the console and boot goes on.
"""

from __future__ import annotations

TEMPLATE = """#!{interpreter} -IS
# trinit launcher, written by `trinit initfs build`. See trinit/initfs/_launcher.py.
import os, sys, time
os.environ["TRINIT_LAUNCHED_AT"] = repr(time.clock_gettime(time.CLOCK_BOOTTIME))
sys.path[:0] = [{site_packages!r}]
AGENT_ARGS = {agent_args!r}
PREINIT = "/etc/trinit/preinit.py"
if os.path.exists(PREINIT):
    try:
        with open(PREINIT) as hook:
            exec(compile(hook.read(), PREINIT, "exec"), {{"__name__": "__preinit__"}})
    except BaseException as exc:
        os.write(2, ("trinit: preinit hook failed: %r\\n" % (exc,)).encode())
from trinit.__main__ import main
main(["trinit", "agent", *AGENT_ARGS, *sys.argv[1:]])
"""


def render(interpreter: str, site_packages: str, agent_args: list[str]) -> str:
    """The launcher text for an interpreter and site-packages path inside the initfs."""
    return TEMPLATE.format(
        interpreter=interpreter, site_packages=site_packages, agent_args=list(agent_args)
    )
