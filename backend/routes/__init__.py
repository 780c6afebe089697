"""HTTP routes of the backend."""
