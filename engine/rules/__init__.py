"""Data directory: the recommender's rules (rules.yaml). A package so that setuptools ships the file."""
