"""`mshale-fl demo`: the whole system on this machine, from partner corpora to a verified audit log."""
