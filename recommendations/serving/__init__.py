"""Serving: recommendation answers from memory. `state` holds the loaded models and catalogs, `options`
the request options, `pipeline` the common tail (filters, boosts, diversity, pins, render), `profile`
the shopper's recent events, and one module per surface. Nothing here trains; a computed answer makes no
SQL query when the store's generation, its model, its catalog and the shopper's profile are at hand."""
