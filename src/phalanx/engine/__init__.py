"""The round engine: selection, dispatch, collection, validation, aggregation and commit."""
