"""`baremetal doctor`: checks of the host and the stack, each ok / warn / fail with what to do."""
