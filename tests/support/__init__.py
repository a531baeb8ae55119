"""Helpers shared by test modules (no test module imports another): tiny run configs and run helpers,
synthetic study tables, hostile run directories, synthetic runs for the report and the paper's claims."""
