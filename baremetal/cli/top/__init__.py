"""`baremetal top`: the node live in the terminal (programs, models, GPUs, events, a log tail, actions).

sources.py reads (supervisord, the state files, the gateway's metrics, NVML), builder.py turns each
reading into a frame.Frame (pure), text.py draws a frame as text (`top --once`) and app.py as a Textual
view; only app.py imports Textual, and only `baremetal top` imports app.py.
"""
