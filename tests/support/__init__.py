"""What several test modules share: fakes for what a test's subject is not, servers
that stand in for what cannot exist here (the hub), helpers to run the CLI."""
