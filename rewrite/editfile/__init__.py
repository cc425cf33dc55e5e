"""Edit files: the low-rank edit artifact and the `rewrite-edit` command (apply, stack, undo, show)."""
