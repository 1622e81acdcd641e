"""`train export`: a trained run's model for other runtimes.

    cli.py          the `train export` command: flags, loading the run, the summary line
    onnx_writer.py  --format onnx: the run's model as one ONNX file (and the shared writer that
                    exports a module with a dynamic batch axis and metadata, atomically)
    wd_writer.py    --format wd-onnx: a WD-tagger folder (model.onnx + selected_tags.csv)

The writers never import the command line; wd_writer uses onnx_writer's `write_onnx`.
"""
