"""saerad: SAE-Rad, interpretable chest X-ray report generation with sparse autoencoders."""

__version__ = "0.1.0"
