"""What the tests and the bench scripts share: running stacks under real supervisord (running, watched),
stack files of small real servers and the CLI as an operator runs it (lifecycle), the demo stack and the
engine envs, fakes for the seams that cannot exist here (fake_nvml), ports and polling."""
