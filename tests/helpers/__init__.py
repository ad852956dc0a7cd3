"""What several test modules share; test modules import from here, never from each other.

- :mod:`tests.helpers.wire`: raw frames and hand-built messages, for tests that speak the
  protocol byte by byte (hostile peers, fuzzers, handshakes).
- :mod:`tests.helpers.cluster`: a master and node agents as real processes, with the real
  client commands (thin pytest-side wrappers over :mod:`mgpu_client.launch`).
- :mod:`tests.helpers.nodes`: node registrations as the master's unit tests feed them.

Imported as ``tests.helpers...``: the repository root is on ``sys.path`` for pytest
(``pythonpath = .`` in setup.cfg) and for mypy (``mypy_path``).
"""
