"""The ``handover`` command line: click commands over the ``vault`` library."""
