from synccurate.cli import app

if __name__ == "__main__":  # worker processes (spawn) re-import this module
    app(prog_name="synccurate")
