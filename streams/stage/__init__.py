"""The stage host: consumer loop with ordered commits, drain on revoke, outcome publishing."""
