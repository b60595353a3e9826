"""``chalice local`` in which every process dies with its parent (on Linux).

With autoreload, chalice local is two processes: a reloader, and a worker that
the reloader starts (and restarts on a change) by running its own ``sys.argv``
again. Only the reloader is the dev stack's child: a worker whose reloader died
would be re-parented to init and go on serving, and polling the checkout for
changes. Run as ``python -m tools.devstack.chalice_local ARGS``, each of them
asks for SIGTERM when its parent dies, since ``sys.argv`` names this module.
"""

from __future__ import annotations

import sys

from tools.devstack.processes import set_parent_death_signal

MODULE = "tools.devstack.chalice_local"


def main() -> None:
    """Run ``chalice`` with this process's arguments; exits with its status."""
    set_parent_death_signal()
    from chalice.cli import cli

    arguments = sys.argv[1:]
    sys.argv = [sys.executable, "-m", MODULE, *arguments]  # what the reloader runs
    cli.main(args=arguments, prog_name="chalice", obj={})


if __name__ == "__main__":
    main()
