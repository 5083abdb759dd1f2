"""spine-cds: a CDS Hooks 2.0 service that triages back pain at order time."""

__version__ = "0.1.0"
