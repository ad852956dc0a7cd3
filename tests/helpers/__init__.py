"""What several test modules share; test modules import from here, never from each other.

- :mod:`tests.helpers.wire`: raw frames and hand-built messages, for tests that speak the
  protocol byte by byte (hostile peers, fuzzers, handshakes).
- :mod:`tests.helpers.cluster`: a master and node agents as real processes, with the real
  client commands (thin pytest-side wrappers over :mod:`mgpu_client.launch`).
- :mod:`tests.helpers.fake_master`: a master played by the test, for a real agent.
- :mod:`tests.helpers.nodes`: node registrations as the master's unit tests feed them.
- :mod:`tests.helpers.state`, :mod:`tests.helpers.planning`: the master's state, handlers and
  planner in process.

Imported as ``tests.helpers...``: the checkout's root is on ``sys.path`` under pytest
(``pythonpath = .`` in setup.cfg), and mypy finds the ``tests`` package from its
``__init__.py``.
"""
