"""`python -m helpers.train`: train a recipe from the command line; the command lives in helpers.commands."""

if __name__ == "__main__":
    from .commands import train_command

    raise SystemExit(train_command())
