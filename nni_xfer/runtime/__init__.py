"""Trial runtime: the trial runner, the warm trial launcher (client and server), lean imports for
trial processes, the warning filter of every entry point, and trials in a container."""
