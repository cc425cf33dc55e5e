"""Train the toy-world generator: a thin entry point to `python -m rewrite.toyworld.training` (same overrides)."""

from rewrite.toyworld.training import main

if __name__ == "__main__":
    main()
