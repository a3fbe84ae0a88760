"""PostgreSQL helpers for the review tests: a throwaway server and the agents workers run."""
