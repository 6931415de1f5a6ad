"""The command line: the only importer of typer and rich. Commands parse, call one `alexcompress.api` function, print."""
