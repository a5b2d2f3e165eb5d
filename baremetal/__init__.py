"""baremetal: run LLM serving stacks on bare-metal GPU servers under supervisord."""

__version__ = "0.1.0"
