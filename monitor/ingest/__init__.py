"""Feed ingestion: fetching feeds over HTTP, parsing them and deciding when each is due."""
