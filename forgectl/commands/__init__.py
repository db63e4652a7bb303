"""One module per subcommand. Keep them thin: parse options, call the library, print."""
