"""`replicate-jupyter serve`: a predictor as a Cog worker (coglet, no Docker), and the pieces it is made of.

    cli.py       the command line (`replicate-jupyter serve PREDICTOR ...`)
    server.py    the supervisor: coglet started, health-polled, restarted; the front in front of it
    auth.py      the front: the one public socket, a streaming reverse proxy that checks the token
    tokens.py    where the token comes from, which addresses need one
    outputs.py   a null output where the schema promises a value is a failure
    workdir.py   the directory coglet runs in (the model's own folder for Cog folders)
    reload.py    the folder's edited code: coglet restarted on it between predictions
    batched.py   a batchable model's concurrent predictions as batches (the adapter coglet loads)
    folder.py    what a Cog folder says: target, environment (scrubbed parent + cog.yaml), version
    lifetime.py  children die with their parent, SIGKILL included

Nothing is imported here: `import replicate_jupyter` stays light.
"""
