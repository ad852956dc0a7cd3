"""Stands in for PyInstaller's run-time hook for ``inspect`` (pyi_rth_inspect), which runs at
every start of a bundle that contains ``inspect`` (dataclasses and click import it).

That hook imports ``inspect`` and ``zipfile`` and lists base_library.zip, so that
``inspect.getsourcefile`` can find the source of frozen code: ~15 ms of every command's start
on a 2-core VM, half of what `squeue` costs. mgpu never asks for its own source (tracebacks use
linecache, not inspect), so this hook does nothing; a bundle that needs source lookup would
have to bring the original back.
"""
