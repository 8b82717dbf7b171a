"""A defense packaged on its own, for neokd-bench (see submissions/README.md)."""
