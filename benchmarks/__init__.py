"""asv benchmarks of fastntk (configuration: asv.conf.json at the repository root)."""
