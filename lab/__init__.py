"""The converge lab: servers of the default topology built for real.

Each server is a systemd container of the Debian release it runs, booted from its own rendered
user data through cloud-init's NoCloud datasource, on a network namespace that carries the
topology's own addresses; then every remote command the program registers for it runs over real
OpenSSH, in the order of its dependencies and with `pulumi up`'s unbounded concurrency. Nothing
here is imported by the program: the lab reads what an offline preview registers."""
