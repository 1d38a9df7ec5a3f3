"""``python -m histomil`` runs the command-line interface."""

from histomil.cli import main

if __name__ == "__main__":
    main()
