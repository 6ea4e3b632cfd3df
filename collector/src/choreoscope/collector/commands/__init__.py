"""One module per `choreoscope` subcommand (see `choreoscope.collector.cli`)."""
