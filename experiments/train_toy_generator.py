"""Train the toy-world generator: a thin entry point to `python -m rewrite.toyworld.models.training`
(same overrides)."""

from rewrite.toyworld.models.training import main

if __name__ == "__main__":
    main()
