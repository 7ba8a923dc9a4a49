"""Command-line entry points (``lampe-calibrate``, ``lampe-eval``); the UI layer of the package.

Every user-facing error becomes one line on stderr and exit code 2 (docs/design.md §4); a traceback
means a bug. One module per command (``_calibrate``, ``_eval``); what they parse alike is in ``_args``.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ._args import ArgumentParser

__all__ = ["ArgumentParser", "Terminated", "calibrate_main", "eval_main", "quiet_library_progress", "run_cli"]

# Errors a user can cause by what they typed; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError, ImportError)


def quiet_library_progress() -> None:
    """Silence the libraries' own progress bars and the warnings ``_quiet`` lists, for this
    process: the commands draw their own bars. Runs first thing in each entry point, since tqdm
    reads its switch when it is imported (``_quiet.quiet_libraries``)."""
    from .._quiet import quiet_libraries

    quiet_libraries()


def _one_line(error: BaseException) -> str:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    return " ".join(str(message).split()) or type(error).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is (like Ctrl-C's ``KeyboardInterrupt``, so that what
    cleans up after an interruption, e.g. Optuna failing the trial in flight, runs for it too)."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated("terminated")


def run_cli(
    main: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None = None,
    prog: str = "",
    resume_hint: str = "",
) -> int:
    """Run ``main(argv)``; a user error prints ``prog: error: <one line>`` and returns 2.

    Ctrl-C (SIGINT) and SIGTERM print one line (with ``resume_hint``) and return the shell's
    codes for them, 130 and 143; SIGTERM is handled only while ``main`` runs, in the main thread.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return main(argv)
    except USER_ERRORS as error:
        print(f"{prog}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"{prog}: terminated (SIGTERM){resume_hint}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{prog}: interrupted{resume_hint}", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def calibrate_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lampe-calibrate``."""
    quiet_library_progress()
    from ._calibrate import main

    hint = "; any trial in flight is marked failed, and the same command resumes the sweep"
    return run_cli(main, argv, "lampe-calibrate", hint)


def eval_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lampe-eval``."""
    quiet_library_progress()
    from ._eval import main

    return run_cli(main, argv, "lampe-eval")
