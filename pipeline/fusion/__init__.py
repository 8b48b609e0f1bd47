"""Stage two's library: frame windows, sampling, losses, fusion heads and their training loop."""
