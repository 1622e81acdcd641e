"""booru-tagger: the shard format (WebDataset tar + parquet pairs); arrives with issue 5."""
