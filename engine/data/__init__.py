"""Data directory: the numbers behind the paper's grades (grades.yaml). A package so that setuptools ships it."""
