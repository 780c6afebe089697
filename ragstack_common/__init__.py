"""What the backend, the ml-api and the CLI share without depending on each other: HTTP
conventions both sides of a call must read and write the same way (Retry-After, bearer tokens).
Standard library only, so that each deployable can ship it."""
