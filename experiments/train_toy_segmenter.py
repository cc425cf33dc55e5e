"""Train the toy-world segmenter: a thin entry point to `python -m rewrite.toyworld.models.segmenter_training`."""

from rewrite.toyworld.models.segmenter_training import main

if __name__ == "__main__":
    main()
