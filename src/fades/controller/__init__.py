"""The controller: node registry, function repository, placement and the HTTP API."""
