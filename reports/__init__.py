"""Reports: everything that reads a results store and presents it (tables now; site, plots
later)."""
