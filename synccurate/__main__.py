from synccurate.cli import app

app(prog_name="synccurate")
