"""The HTTP routes, one module per audience; each calls the objects `deps` hands it."""
