"""Jobs of the accounts domain (the package form: tasks, startup and shutdown modules)."""
