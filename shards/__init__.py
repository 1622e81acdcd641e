"""booru-tagger: shards stage."""
