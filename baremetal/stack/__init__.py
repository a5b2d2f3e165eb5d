"""Running a stack: up and down, waiting until programs serve, the probes that tell, and `status`."""
