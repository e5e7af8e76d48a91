"""The response cache (issue 23): the L1 policies, Belady's optimum and their measurement."""
