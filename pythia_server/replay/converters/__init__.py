"""Converters from recorded agent traces to the workload format (one module per source)."""
