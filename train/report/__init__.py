"""`train report`: a self-contained HTML evaluation report of a run (no server, no CDN).

    scores.py    the run's model over the validation shards -> per-sample scores and targets
    analysis.py  per-tag numbers: support, AP, P/R/F1 at the tag's threshold, PR curve,
                 the worst false positives and false negatives
    svg.py       inline SVG line charts (training curves, PR curves)
    pages.py     index.html (summary, headline metrics, curves, sortable tag table) and one
                 page per tag (its PR curve and its worst validation pictures)
    cli.py       `train report --model run/`; `write_report()` is also called after training

The validation scores are recomputed from run/model.safetensors (the run does not keep
them), so a report can be made for any finished run whose shards are still readable.
Thumbnails are cut from the validation shards in a second pass, only for the pictures a tag
page shows, so memory holds the score matrix and nothing else of the validation set.
"""
