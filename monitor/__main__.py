"""`python -m monitor` and the `monitor` command.

The command's script imports this module, not monitor.cli: worker processes (monitor.ingest.workers) run the
parent's script again before their first job, and importing the whole CLI there would load the whole service
into every worker.
"""


def main() -> None:
    from monitor.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
