"""distaff benchmarks (not tests): ``python -m bench`` or ``make bench``.

Every module here except ``__main__``, ``report`` and ``routines`` uses only
the standard library at import time, so the peer runs (``wool``, in its own
virtual environment without distaff) can import ``bench.common`` and
``bench.runner`` too.
"""
