"""headprobe: figures stage."""
