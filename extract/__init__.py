"""headprobe: extract stage."""
