"""The ``aelab`` command line: one module per subcommand."""
