"""`gracectl` and `python -m gracectl`: interrupts are gracectl's from the first instruction, before the CLI's
imports (about half a second), so a Ctrl-C at any moment gives one line and a true exit code, never a traceback."""

import sys

from gracectl import interrupts


def run() -> None:
    interrupts.install()
    try:
        from gracectl.cli import main
    except interrupts.Interrupted as exc:
        print(f"error: {exc} while starting: nothing was done", file=sys.stderr)
        sys.exit(exc.exit_code)
    main()


if __name__ == "__main__":
    run()
