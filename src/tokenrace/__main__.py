from tokenrace.cli import app

app()
