"""The method: edit sites, keys and their statistics, edit requests and problems, erasure, files and checkpoints.

Depends on nothing else in the package (`rewrite.generators` only for type hints)."""
