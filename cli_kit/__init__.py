"""The command-line kit every command of the project uses (scrape, prep, train, tag, ...).

    command_line.py   help formatter, ``--config FILE.toml``, deprecated aliases, ``run_main``
    logs.py           ``configure_logging``: one stderr handler, -v / -q
    workers.py        the one rule for ``--workers``: the default per CPU, 0 = main process

It imports nothing of the stages, so every stage may import it (docs/DESIGN.md, "Import
rules").
"""
