"""``python -m choreograph``: the ``choreograph`` command (see `choreograph.cli`)."""

from choreograph.cli import main

if __name__ == "__main__":
    main()
