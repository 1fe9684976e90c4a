"""``python -m fades``: the same as the ``fades`` command."""

from fades.cli import app

if __name__ == "__main__":
    app()
