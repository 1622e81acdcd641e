"""booru-tagger: train stage."""
