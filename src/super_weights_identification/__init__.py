"""The seed project's entry point, kept so its documented command still works."""
