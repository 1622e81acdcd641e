"""booru-tagger: scrape stage."""
