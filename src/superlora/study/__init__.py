"""The super-weight study: every arm trained and scored the same way, reported from files."""
