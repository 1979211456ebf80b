"""The application on top of core, methods, tasks and reports, in five rooms: ``plan`` (a run's
settings, declared once, resolved into a plan), ``running`` (the runner and the executors),
``evaluation`` (the scores taken at a checkpoint), ``checks`` (editbench measuring itself) and
``cli`` (the command line, which nothing imports); ``api`` is the Python entry point."""
