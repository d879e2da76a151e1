"""``python -m inference.engines.server``: see ``inference.engines.server.cli``."""

from inference.engines.server.cli import main

if __name__ == "__main__":
    main()
