"""Debian's chromium as the browser tests and the review benchmark start it: headless, as root, with nothing
that reaches out to the network on its own."""

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
