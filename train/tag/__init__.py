"""`tag`: label, caption and sort images with a trained run (loaded by train/runs.py).

    cli.py        the `tag` command: flags, the loop over batches, the summary
    inference.py  prepare images as the shards were, on worker processes; predict in batches
    captions.py   caption text and files beside the images
    selection.py  which tags an image keeps beyond the thresholds (--top-k, --mcut, ...)
    sorting.py    copy or move images into folders by label
    output.py     the --output table and the --embeddings table
    wd_model.py   a WD-tagger folder (model.onnx + selected_tags.csv) in place of a run
    review/       `tag review`: correct the tags in the browser, then train on them
"""
