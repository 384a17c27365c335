"""The ``kyoso`` command's entry point (also ``python -m kyoso``).

Ctrl-C ends the command quietly at any moment, while its modules are still loading too:
the command line itself (:mod:`kyoso.cli`) is loaded inside the guard.
"""

import sys


def main() -> int:
    """Run ``kyoso`` with the process's arguments; 130 if interrupted by Ctrl-C."""
    try:
        from kyoso.cli import main as run  # noqa: PLC0415 (loaded inside the guard)

        return run()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
