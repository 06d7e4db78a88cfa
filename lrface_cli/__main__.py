from lrface_cli import app

app()
