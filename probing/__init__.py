"""headprobe: probing stage."""
