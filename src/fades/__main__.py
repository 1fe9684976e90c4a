"""``python -m fades`` and the ``fades`` command's entry point (``fades.__main__:main``).

The command line's modules take a moment to import (about 0.3 s, longer on a busy machine);
Ctrl-C in that moment ends the command with one line and exit status 130, as it does once
the command runs, not with a traceback from the middle of an import.
"""

import sys


def main() -> int:
    """Import the command line, then run it."""
    try:
        from fades.cli import app
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    app()
    return 0


if __name__ == "__main__":
    sys.exit(main())
