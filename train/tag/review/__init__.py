"""`tag review`: correct a model's tags in the browser, then train on the corrections.

    predictions.py  the run's model over the folder's images (where not done yet), kept in
                    IMAGES/.review/predictions.jsonl (`tag --output` rows); captions written
                    for images that have none, as `tag --captions` writes them
    store.py        the folder's state: images, captions on disk (with a version each), edits
                    saved atomically to the caption and logged to IMAGES/.review/corrections.jsonl
    server.py       the aiohttp app on 127.0.0.1: a JSON API and the static page
    static/         index.html, review.js, review.css (no CDN)
    cli.py          `tag review IMAGES --model run/`

The captions are the truth the app edits; `prep make-shards --folder IMAGES` reads them back.
"""
