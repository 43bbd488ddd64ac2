"""headprobe: datasets_build stage."""
