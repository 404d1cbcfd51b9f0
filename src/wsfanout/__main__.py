"""``python -m wsfanout``: the same as the ``wsfanout`` command."""

from ._cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
