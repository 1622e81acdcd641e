"""`tag`: label, caption and sort images with a trained run
(docs/DESIGN.md, "Boundary 4: a training run (run/)").

    cli.py        the `tag` command: flags, the loop over batches, the summary
    inference.py  load a run; prepare images as the shards were; predict; thresholds
    captions.py   caption text and files beside the images
    sorting.py    copy or move images into folders by label
    output.py     the --output table and the --embeddings table
"""
