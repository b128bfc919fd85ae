"""The ``tollgate`` command line: ``main`` builds the app of commands, one module per command
group. The only package that imports typer and rich (import contract ``cli``)."""
