"""Several nodes, one stack file: Ray's node programs and their command lines (ray), the launcher that
starts a program once the cluster can hold it (launch), the cluster's membership as the head sees it
(members), what to do when it changes (policy), and stale shared memory left by dead engines (shm)."""
