"""The evaluate path: facts read from the registry (documents and columns), decided, recorded."""
