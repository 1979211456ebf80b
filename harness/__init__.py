"""The harness: registries, records, probes, the lifelong runner, timing, the results store, CLI."""
