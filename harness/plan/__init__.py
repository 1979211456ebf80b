"""What a run will do, known before it does it: its settings (one schema), run files, the pure
resolve step into a ``RunPlan``, each method's cost estimate, and the preflight findings."""
