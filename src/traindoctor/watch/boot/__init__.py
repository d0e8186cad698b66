"""The start-up hook of the processes of a distributed run (``sitecustomize.py`` here).

This directory is put first on ``PYTHONPATH`` (by ``traindoctor run -- LAUNCHER …``, or by hand with
``PYTHONPATH=$(traindoctor boot-path)``), so every Python process started under it imports the
``sitecustomize`` module beside this file at start-up. Nothing here is imported as
``traindoctor.watch.boot`` at run time; the package exists so an installed traindoctor ships the file.
"""
