"""Helper libraries shared by stage plugins; they register no hooks."""
