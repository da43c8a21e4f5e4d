"""The ``fastap`` command: the dispatcher (``main``), one module per subcommand, the main job."""
