"""Embedded models: the default shapes detector (``shapes.torchscript`` + ``shapes.labels.txt``) and its architecture.

Beside it: the rotated-box detector (``shapes-obb``, ``net_obb``) and the marks secondary classifier (``marks``,
``net_marks``); ``pyinfer.zoo`` lists them. Nothing heavy is imported here: the ``net*`` modules need torch and are
only imported by training and tests.
"""
