"""``python -m advisor`` is the same as the ``advisor`` command."""

from advisor.cli import main

if __name__ == "__main__":
    main()
