"""`python -m nyxcore keys generate`: the commands that must work before the app can start.

Production refuses to build the app without encryption keys, so `flask --app wsgi nyxcore keys
generate` cannot make the first one there; this runs the same command without an app.
"""

from __future__ import annotations

import click

from nyxcore.cli import generate_key

main = click.Group(
    "python -m nyxcore",
    help="NyxCore commands that need no app (the others are `flask --app wsgi nyxcore ...`).",
    commands={
        "keys": click.Group("keys", help="The encryption key ring.", commands={"generate": generate_key})
    },
)

if __name__ == "__main__":
    main()
