"""Model access by tier: the model registry (versions, contributors, model cards) and the access policy."""
