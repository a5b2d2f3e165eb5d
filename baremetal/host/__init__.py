"""The effect seams on the host: GPUs through NVML, processes through psutil, TCP ports."""
