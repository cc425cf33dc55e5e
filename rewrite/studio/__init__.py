"""The rewriting studio: make, see and keep an edit in the browser (`rewrite-studio`, `python -m rewrite.studio`).

`backend` holds every action without a UI (tested without a browser), `runs` the runs and the history of kept
edits, `app` the NiceGUI page, `security` the rules for paths and uploads; `docs/studio.md` tells how to use it.
"""
