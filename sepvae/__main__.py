"""``python -m sepvae``: the sepvae command line."""

from sepvae.cli import app

app(prog_name="sepvae")
