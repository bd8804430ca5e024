"""``groundwire reindex``: change embedders without downtime.

The environment (``GROUNDWIRE_*``) describes the configuration the servers will run after
the switch: its embedder embeds the new generation, its store settings name where the
generations live. Steps::

    groundwire reindex build      # the next generation beside the live one, re-embedded
    groundwire reindex compare …  # optional, from the tools: nDCG@10 old vs new
    groundwire reindex switch     # catch up, then switch the alias (pointer) atomically
    (rolling restart of the servers with the new configuration)
    groundwire reindex catch-up   # copy what servers on the old generation wrote meanwhile
    groundwire reindex rollback   # the previous generation live again (restart the servers
                                  # with the old configuration)
    groundwire reindex status

Running servers keep the generation they started on (their embedder was built for it), so
calls in flight never see a switch; each server moves when it restarts. On Edge, while a
server owns the store, build, switch and catch-up run inside it, asked over its owner socket
(:mod:`groundwire.server.reindex.owner`), and it keeps serving.
"""

from __future__ import annotations

import argparse

from groundwire.server.installed_commands import add_installed

#: The entry-point group of the steps other distributions add (the tools' ``compare``).
STEPS_GROUP = "groundwire.reindex_steps"

# Only argparse and the entry points here: the `groundwire` parser loads this module for every
# command, `serve` included, before the worker supervisor sets prometheus_client's
# multiprocess directory, so nothing that imports prometheus_client (the stores, the
# clients) may load with it; the steps themselves are in reindex.command.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommands."""
    steps = parser.add_subparsers(dest="step", required=True)
    steps.add_parser("status", help="the generations and which one is live")
    steps.add_parser("build", help="re-embed the live generation into the next one")
    flip = steps.add_parser("switch", help="catch up, then make the built generation live")
    flip.add_argument(
        "--no-catch-up", action="store_true", help="switch without copying recent writes first"
    )
    steps.add_parser("catch-up", help="after a switch: copy writes made on the previous one")
    steps.add_parser("rollback", help="make the previous generation live again")
    # Steps other installed distributions add (the tools' ``compare``); each sets ``run_step``.
    add_installed(steps, STEPS_GROUP, "groundwire reindex")
