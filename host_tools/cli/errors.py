# The one place where a user's mistake becomes one `Error:` line and an exit status: the tools'
# own errors and the OS's (a user's file, the network). Anything else is a bug: its traceback stays.
from __future__ import annotations

import os
import sys
import traceback

import click

# Exit statuses (docs/sdk.md section 4): 0 done; 1 refused or failed (one Error: line);
# 2 bad arguments or a bad input file (click's usage errors use 2 as well).
FAILED, BAD_INPUT = 1, 2
DEBUG_ENV = "PARCELBOX_DEBUG"   # set to 1: a user's error shows its traceback as well
# SQLite's words for a registry file the machine will not let us use (never a bug of ours,
# unlike "no such column"): a read-only file or folder, another writer, a full disk
_SQLITE_PLACE = ("attempt to write a readonly database", "database is locked",
                 "database or disk is full", "disk I/O error", "unable to open database file")


def _kinds() -> list[tuple[type, int]]:
    # imported here: `parcelbox --help` does not load paho, sqlite or the VM
    from host_tools.backend.brokerurl import BrokerUrlError
    from host_tools.backend.protocol import ProtocolError
    from host_tools.backend.sdk import BrokerError, LedgerError
    from host_tools.boards import BoardError, BoardFileError
    from host_tools.sim.scenario import ExpectationFailed, ScenarioError
    from host_tools.sim.simbox import SimError
    from host_tools.tech.build import BuildError
    from host_tools.tech.clientcert import ClientCertError
    from host_tools.tech.doctor import Unreachable
    from host_tools.tech.ports import PortError
    from host_tools.tech.heapneed import HeapNeedError
    from host_tools.tech.provision import ProvisionError
    from host_tools.vm.runner import VMError

    # first match wins: the specific before the general
    return [(Unreachable, BAD_INPUT),   # doctor: 2, the board cannot be reached
            (PortError, FAILED), (BrokerUrlError, BAD_INPUT), (ScenarioError, BAD_INPUT), (BoardFileError, BAD_INPUT),
            (BrokerError, FAILED), (LedgerError, FAILED), (ProtocolError, FAILED),
            (BoardError, FAILED), (ProvisionError, FAILED), (BuildError, FAILED),
            (ClientCertError, FAILED), (HeapNeedError, FAILED), (VMError, FAILED),
            (SimError, FAILED), (ExpectationFailed, FAILED),
            (OSError, FAILED), (UnicodeError, FAILED)]


class UserError(click.ClickException):
    """Printed by click as `Error: <message>`; exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = FAILED):
        super().__init__(message)
        self.exit_code = exit_code


def os_words(e: OSError) -> str:
    """An OSError as a sentence: what failed and on which file, not `[Errno 2] ...`."""
    import socket
    if isinstance(e, socket.gaierror):
        return "unknown host (%s)" % (e.strerror or e)
    what = e.strerror or str(e) or e.__class__.__name__
    if e.filename is not None:
        return "%s: %s" % (os.fsdecode(e.filename), what)
    return what


def as_user_error(e: BaseException) -> UserError | None:
    """The exit status and words for one of the tools' own errors; None for anything else."""
    import sqlite3
    if isinstance(e, sqlite3.OperationalError) and str(e) in _SQLITE_PLACE:
        return UserError("the registry: %s" % e, FAILED)
    for kind, status in _kinds():
        if isinstance(e, kind):
            if isinstance(e, UnicodeDecodeError):
                # its text quotes the bytes around the fault: they may be a password's
                text = "a file is not UTF-8 text (byte %d)" % e.start
            elif kind is OSError:
                text = os_words(e)
            else:
                text = str(e) or e.__class__.__name__
            return UserError(text, status)
    return None


class Group(click.Group):
    """The root `parcelbox` group: every command runs inside `invoke`, so an error of ours
    raised anywhere below ends as one line (PARCELBOX_DEBUG=1 shows its traceback too)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - sorted below: ours in words, a bug re-raised
            err = as_user_error(e)
            if err is None:
                raise
            if os.environ.get(DEBUG_ENV):
                traceback.print_exc()
            raise err from None

    def main(self, *args, **kwargs):
        # a file name or board text that is not valid Unicode is printed escaped, not a crash
        for stream in (sys.stdout, sys.stderr):
            if hasattr(stream, "reconfigure"):
                try:
                    stream.reconfigure(errors="backslashreplace")
                except (ValueError, OSError):
                    pass
        return super().main(*args, **kwargs)
