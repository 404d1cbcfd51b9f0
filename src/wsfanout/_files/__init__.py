"""Policies in files: value units, TOML policy files, the presets and routing files.

Pure reading and writing of declarations, built on the core's policies; exported by
``wsfanout.files`` and used by the ``wsfanout`` command.
"""
