"""Embedded models: the default shapes detector (``shapes.torchscript`` + ``shapes.labels.txt``) and its architecture.

Nothing heavy is imported here: ``net`` needs torch and is only imported by training and tests.
"""
