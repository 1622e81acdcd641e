"""booru-tagger: prep stage."""
