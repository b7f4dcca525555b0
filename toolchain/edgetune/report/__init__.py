"""Reports: statistics over paired per-item results, and the Markdown/JSON writers."""
