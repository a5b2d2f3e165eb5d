"""supervisord as baremetal drives it: process states, the typed XML-RPC client, the daemon process, and
the log files it writes."""
